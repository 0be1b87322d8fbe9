// Package iscsit is DiStoNet's iSCSI target: the per-node overlay volumes and the iSCSI
// disk donations are served through it.
//
// The transport is ours (RFC 7143 target side: login with CHAP one-way and mutual,
// initiator ACLs, operational negotiation, SCSI command / Data-In / Data-Out / R2T,
// immediate and unsolicited data, residuals, NOP, SendTargets filtered per initiator,
// logout, task management), registered as a gotgt target driver. SCSI commands run on
// gotgt's core (github.com/gostor/gotgt, through SCSITargetService.AddCommandQueue), except
// the data path and the commands gotgt gets wrong, which are answered here before they reach
// it; the backing store is ours too (durable: SYNCHRONIZE CACHE and FUA are fdatasync before
// the status, UNMAP punches holes). Creating and formatting volume files is left to
// overlay/volume; which targets exist, with which secrets, to the caller (the daemon adds
// and removes them from its registry at run time).
package iscsit
