// Package disk decides whether a node may give a disk to the pool: it lists candidate disks
// from /sys/block (size, rotational, removable, holders, partitions), reads which filesystems
// are mounted (/proc/self/mountinfo) and which swaps are active, recognises on-disk
// signatures itself (partition tables, filesystems, swap, LVM, LUKS, md, ZFS...), finds the
// boot disk, and opens a device O_EXCL to see whether the kernel holds it.
//
// CheckDonatable is the single gate: it refuses with a reason a person can act on. Exporting
// the disk is donate/aoe's (or the iSCSI exporter's) job; choosing when is the agent's.
package disk
