package agent

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The first process a sandbox starts costs gVisor one more thing than the
// ones after it: on the systrap platform every new address space needs a
// stub process on the host (ptrace-attached, seccomp-filtered, with its
// shared regions mapped), and the sentry makes one only when its pool of
// released ones is empty. Inside raw runsc, a first spawn took 30-35 ms
// where the second took 13 (a tiny program either time), and the first exec
// a client sent to a new sandbox paid that (first Exec until started 27 ms,
// later ones 10).
//
// So an agent without an entrypoint starts one process of its own as soon
// as it runs: a program of a few instructions that exits at once, kept in
// a memfd, so it needs nothing from the image and leaves nothing in the
// sandbox's filesystem. When it exits its stub goes back to the pool, where
// the client's first exec finds it. Failures are logged and ignored: the
// warm-up only saves time.

// exitProgram returns a static ELF executable of this machine's
// architecture whose only instructions are exit_group(0), or nil for an
// architecture without one.
func exitProgram() []byte {
	code, machine := exitCode()
	if code == nil {
		return nil
	}
	const (
		base     = 0x400000 // load address
		ehdrSize = 64
		phdrSize = 56
	)
	size := ehdrSize + phdrSize + len(code)
	le := binary.LittleEndian
	b := make([]byte, size)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */})
	le.PutUint16(b[16:], 2) // ET_EXEC
	le.PutUint16(b[18:], machine)
	le.PutUint32(b[20:], 1)                      // EV_CURRENT
	le.PutUint64(b[24:], base+ehdrSize+phdrSize) // entry: the code
	le.PutUint64(b[32:], ehdrSize)               // program headers
	le.PutUint16(b[52:], ehdrSize)               // header size
	le.PutUint16(b[54:], phdrSize)               // program header size
	le.PutUint16(b[56:], 1)                      // one program header
	p := b[ehdrSize:]
	le.PutUint32(p[0:], 1)             // PT_LOAD
	le.PutUint32(p[4:], 5)             // PF_R|PF_X
	le.PutUint64(p[16:], base)         // vaddr (offset 0)
	le.PutUint64(p[24:], base)         // paddr
	le.PutUint64(p[32:], uint64(size)) // file size
	le.PutUint64(p[40:], uint64(size)) // memory size
	le.PutUint64(p[48:], 0x1000)       // alignment
	copy(b[ehdrSize+phdrSize:], code)
	return b
}

// warmUp starts the exit program and returns at once; its end is logged.
func (a *Agent) warmUp() {
	prog := exitProgram()
	if prog == nil {
		return
	}
	fd, err := unix.MemfdCreate("sandboxd-warm-up", unix.MFD_CLOEXEC)
	if err != nil {
		a.log.Debug("warm-up skipped", "err", err)
		return
	}
	f := os.NewFile(uintptr(fd), "sandboxd-warm-up")
	if _, err := f.Write(prog); err != nil {
		f.Close()
		a.log.Debug("warm-up skipped", "err", err)
		return
	}
	start := time.Now()
	// The child opens /proc/self/fd/N before exec closes it (CLOEXEC).
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	null, err := os.Open(os.DevNull)
	if err != nil {
		f.Close()
		a.log.Debug("warm-up skipped", "err", err)
		return
	}
	defer null.Close()
	attr := &os.ProcAttr{Dir: "/", Files: []*os.File{null, null, null}}
	_, err = a.reaper.start(path, []string{"sandboxd-warm-up"}, attr, func(ws syscall.WaitStatus) {
		f.Close()
		a.log.Debug("warm-up done", "took", time.Since(start), "status", int(ws))
	})
	if err != nil {
		f.Close()
		a.log.Debug("warm-up failed", "err", err)
	}
}
