package agent

import "syscall"

const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER from linux/prctl.h

// SetSubreaper makes the calling process a child subreaper: orphaned
// descendants are reparented to it instead of to PID 1, so it must reap
// them (run the agent with Options.ReapAll). PID 1 need not call it.
func SetSubreaper() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}
