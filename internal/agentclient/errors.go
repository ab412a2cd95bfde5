package agentclient

import (
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

// rpcError is an error of an agent call: it matches both its errdefs class
// and the underlying error (so connect.CodeOf still works).
type rpcError struct {
	op    string
	class error
	err   error
}

func (e *rpcError) Error() string   { return e.op + ": " + e.err.Error() }
func (e *rpcError) Unwrap() []error { return []error{e.class, e.err} }

// fromConnect wraps err with op and the errdefs class of its Connect code.
func fromConnect(err error, op string) error {
	if err == nil {
		return nil
	}
	return &rpcError{op: op, class: classOf(err), err: err}
}

func classOf(err error) error { return rpcerr.Class(err) }
