package agent

import (
	"fmt"
	"syscall"
	"unsafe"
)

// ClearInheritableCaps empties the inheritable capability set of every
// thread of this process, keeping the permitted and effective sets.
//
// The daemon gives the agent CAP_SYS_ADMIN (to mount images while the
// sandbox runs) through the inheritable set, outside the bounding set (see
// runtime.Spec.InitCapabilities): gVisor applies execve's rules to the init
// itself, so that is the only way in. Once the inheritable set is empty, a
// program the agent executes, even as root, gets only the bounding set:
// the execs cannot mount, nor ptrace the agent. Call it first thing, before
// anything is executed. It needs a static (cgo-free) binary, which makes
// syscall.AllThreadsSyscall work; an error means the capabilities were not
// confined and the agent must not run anything.
func ClearInheritableCaps() error {
	hdr := capHeader{version: linuxCapabilityVersion3}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capget: %w", e)
	}
	if data[0].inheritable == 0 && data[1].inheritable == 0 {
		return nil
	}
	data[0].inheritable, data[1].inheritable = 0, 0
	hdr.pid = 0
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

const linuxCapabilityVersion3 = 0x20080522

type capHeader struct {
	version uint32
	pid     int32
}

type capData struct{ effective, permitted, inheritable uint32 }
