package network

import "errors"

// undo is a stack of undo steps for multi-step setup, in the spirit of
// gVisor's pkg/cleanup: each step that succeeds pushes its undo; on failure
// run pops and runs them all, on success release forgets them.
// Not safe for concurrent use.
type undo struct {
	fns []func() error
}

// add pushes an undo step.
func (u *undo) add(f func() error) { u.fns = append(u.fns, f) }

// release forgets every step: the setup succeeded.
func (u *undo) release() { u.fns = nil }

// run runs the steps last first and returns their errors joined. It runs all
// steps even when some fail.
func (u *undo) run() error {
	var errs []error
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	u.fns = nil
	return errors.Join(errs...)
}
