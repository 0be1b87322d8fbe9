package nfsroot

import "syscall"

type syscallStat = syscall.Stat_t
