package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestRoundTrip(t *testing.T) {
	for _, cc := range classCodes {
		err := ToConnect(fmt.Errorf("ctx: %w", cc.class))
		if got := connect.CodeOf(err); got != cc.code {
			t.Errorf("%v: got code %v, want %v", cc.class, got, cc.code)
		}
		want := cc.class
		if cc.class == errdefs.ErrExpired {
			want = errdefs.ErrFailedPrecondition // the code alone cannot tell them apart
		}
		if got := Class(err); got != want {
			t.Errorf("%v: got class %v back, want %v", cc.class, got, want)
		}
	}
}

func TestSpecialCases(t *testing.T) {
	if got := Code(errors.New("boom")); got != connect.CodeInternal {
		t.Errorf("unclassed: got %v, want internal", got)
	}
	if got := Code(context.Canceled); got != connect.CodeCanceled {
		t.Errorf("canceled: got %v", got)
	}
	relayed := connect.NewError(connect.CodeOutOfRange, errors.New("gap"))
	if got := ToConnect(fmt.Errorf("x: %w", relayed)); connect.CodeOf(got) != connect.CodeOutOfRange {
		t.Errorf("relayed code lost: %v", got)
	}
	if got := Class(relayed); got != errdefs.ErrInvalidArgument {
		t.Errorf("out of range: got class %v", got)
	}
	if got := Class(connect.NewError(connect.CodeUnauthenticated, errors.New("x"))); got != errdefs.ErrPermissionDenied {
		t.Errorf("unauthenticated: got class %v", got)
	}
}
