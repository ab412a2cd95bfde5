package sandboxd

import (
	"errors"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func TestWrapMapsCodesToClasses(t *testing.T) {
	cases := map[connect.Code]error{
		connect.CodeNotFound:           ErrNotFound,
		connect.CodeAlreadyExists:      ErrAlreadyExists,
		connect.CodeInvalidArgument:    ErrInvalidArgument,
		connect.CodeFailedPrecondition: ErrFailedPrecondition,
		connect.CodeUnauthenticated:    ErrUnauthenticated,
		connect.CodeDataLoss:           ErrInternal,
	}
	for code, class := range cases {
		err := wrap(connect.NewError(code, errors.New("msg")))
		if !errors.Is(err, class) || err.Error() != "msg" {
			t.Errorf("code %v: got %v (%T), want class %v with message msg", code, err, err, class)
		}
	}
	if wrap(nil) != nil {
		t.Error("wrap(nil) != nil")
	}
}

func TestPipeBoundsAndDrains(t *testing.T) {
	p := newPipe(8)
	wrote := make(chan struct{})
	go func() {
		p.Write([]byte("12345678"))
		p.Write([]byte("9")) // blocks until the reader makes room
		close(wrote)
		p.closeWithError(nil)
	}()
	select {
	case <-wrote:
		t.Fatal("a write past the bound did not wait for the reader")
	case <-time.After(50 * time.Millisecond):
	}
	b, err := io.ReadAll(p)
	if string(b) != "123456789" || err != nil {
		t.Errorf("got %q, %v", b, err)
	}
}
