package sandboxd

import (
	"context"
	"errors"
	"io"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// WatchOptions say what a watch covers. nil means the path alone, until
// the watch is closed.
type WatchOptions struct {
	// Recursive watches a directory's whole tree, including directories
	// created while watching.
	Recursive bool
	// Timeout ends the watch (Next returns io.EOF) after this long; 0: never.
	Timeout time.Duration
}

// WatchEventType is what happened to a path.
type WatchEventType string

const (
	EventCreate   WatchEventType = "create" // created, or moved in
	EventModify   WatchEventType = "modify" // written
	EventRemove   WatchEventType = "remove"
	EventRename   WatchEventType = "rename"   // moved away; Path is the old name
	EventOverflow WatchEventType = "overflow" // events were lost
)

var eventTypes = map[pb.WatchEventType]WatchEventType{
	pb.WatchEventType_WATCH_EVENT_TYPE_CREATE:   EventCreate,
	pb.WatchEventType_WATCH_EVENT_TYPE_MODIFY:   EventModify,
	pb.WatchEventType_WATCH_EVENT_TYPE_REMOVE:   EventRemove,
	pb.WatchEventType_WATCH_EVENT_TYPE_RENAME:   EventRename,
	pb.WatchEventType_WATCH_EVENT_TYPE_OVERFLOW: EventOverflow,
}

// WatchEvent is one change inside the sandbox.
type WatchEvent struct {
	Type  WatchEventType
	Path  string
	IsDir bool
}

// Watcher is a running watch. Not safe for concurrent use, except Close.
type Watcher struct {
	s      *connect.ServerStreamForClient[pb.WatchEvent]
	cancel context.CancelFunc
}

// Watch watches the file or directory p for changes made inside the
// sandbox. It returns once the watch is in place: every change after it is
// reported by Next.
func (f *Files) Watch(ctx context.Context, p string, o *WatchOptions) (*Watcher, error) {
	if o == nil {
		o = &WatchOptions{}
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := f.sb.c.files.Watch(ctx, connect.NewRequest(&pb.WatchRequest{
		SandboxId: f.sb.ID, Path: p, Recursive: o.Recursive, TimeoutMs: o.Timeout.Milliseconds()}))
	if err != nil {
		cancel()
		return nil, wrapFile(err)
	}
	if !s.Receive() || s.Msg().Type != pb.WatchEventType_WATCH_EVENT_TYPE_READY {
		err := s.Err()
		s.Close()
		cancel()
		if err == nil {
			err = errors.New("watch " + p + ": stream ended before the watch was in place")
		}
		return nil, wrapFile(err)
	}
	return &Watcher{s: s, cancel: cancel}, nil
}

// Next returns the next event. It returns io.EOF when the watch's timeout
// passed, and an error of class ErrCanceled after Close or when the
// context ends.
func (w *Watcher) Next() (WatchEvent, error) {
	for w.s.Receive() {
		m := w.s.Msg()
		if t, ok := eventTypes[m.Type]; ok {
			return WatchEvent{Type: t, Path: m.Path, IsDir: m.IsDir}, nil
		}
	}
	if err := w.s.Err(); err != nil {
		return WatchEvent{}, wrapFile(err)
	}
	return WatchEvent{}, io.EOF
}

// Close ends the watch.
func (w *Watcher) Close() error {
	w.cancel()
	return w.s.Close()
}
