package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"
	"unsafe"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// Watch streams the changes of a file or directory (with recursive, of its
// whole tree, including directories created while watching) through
// inotify. The first event is READY, once every watch is in place. The
// stream ends when the caller cancels or the request's timeout passes.
func (s *fsService) Watch(ctx context.Context, req *connect.Request[agentv1.WatchRequest], stream *connect.ServerStream[agentv1.WatchEvent]) error {
	m := req.Msg
	p, err := cleanPath("watch", m.Path)
	if err != nil {
		return fsToConnect("watch", m.Path, err)
	}
	if m.TimeoutMs < 0 {
		return fsToConnect("watch", p, errInvalid("negative timeout"))
	}
	if m.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(m.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	w, err := newWatcher(p, m.Recursive)
	if err != nil {
		return fsToConnect("watch", p, err)
	}
	defer w.close()
	if err := stream.Send(&agentv1.WatchEvent{Type: agentv1.WatchEventType_WATCH_EVENT_TYPE_READY, Path: p}); err != nil {
		return err
	}
	events := make(chan []*agentv1.WatchEvent)
	go w.run(events)
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && req.Msg.TimeoutMs > 0 {
				return nil // the watch's own timeout: a normal end
			}
			return toConnect(ctx.Err())
		case evs, ok := <-events:
			if !ok {
				return nil
			}
			for _, ev := range evs {
				if err := stream.Send(ev); err != nil {
					return err
				}
			}
		}
	}
}

// watcher is one inotify instance and the paths of its watches.
type watcher struct {
	f         *os.File
	fd        int
	recursive bool
	root      string
	paths     map[int32]string // watch descriptor -> path; owned by run after start
	done      chan struct{}
}

func newWatcher(p string, recursive bool) (*watcher, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, recursive: recursive && fi.IsDir(), root: p,
		paths: map[int32]string{}, done: make(chan struct{})}
	if err := w.add(p); err != nil {
		w.f.Close()
		return nil, err
	}
	if w.recursive {
		w.addTree(p)
	}
	return w, nil
}

// add watches one path.
func (w *watcher) add(p string) error {
	wd, err := unix.InotifyAddWatch(w.fd, p, watchMask|unix.IN_DONT_FOLLOW)
	if err != nil {
		return &fs.PathError{Op: "watch", Path: p, Err: err}
	}
	w.paths[int32(wd)] = p
	return nil
}

// addTree watches the directories beneath p (best effort: a directory that
// vanishes meanwhile is skipped).
func (w *watcher) addTree(p string) {
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && q != p {
			w.add(q)
		}
		return nil
	})
}

// close stops the watcher; run's read fails and run returns.
func (w *watcher) close() {
	close(w.done)
	w.f.Close()
}

// run reads inotify events and sends them on out, one batch per read, until
// the watcher is closed. It closes out.
func (w *watcher) run(out chan<- []*agentv1.WatchEvent) {
	defer close(out)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		evs := w.parse(buf[:n])
		if len(evs) == 0 {
			continue
		}
		select {
		case out <- evs:
		case <-w.done:
			return
		}
	}
}

// parse turns a read of inotify events into watch events, merging repeated
// MODIFY events of one path.
func (w *watcher) parse(b []byte) []*agentv1.WatchEvent {
	var evs []*agentv1.WatchEvent
	emit := func(t agentv1.WatchEventType, p string, dir bool) {
		if n := len(evs); n > 0 && t == agentv1.WatchEventType_WATCH_EVENT_TYPE_MODIFY &&
			evs[n-1].Type == t && evs[n-1].Path == p {
			return
		}
		evs = append(evs, &agentv1.WatchEvent{Type: t, Path: p, IsDir: dir})
	}
	for len(b) >= unix.SizeofInotifyEvent {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(raw.Len)
		if end > len(b) {
			break
		}
		name := string(b[unix.SizeofInotifyEvent:end])
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		b = b[end:]
		mask := raw.Mask
		if mask&unix.IN_Q_OVERFLOW != 0 {
			emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_OVERFLOW, "", false)
			continue
		}
		base, ok := w.paths[raw.Wd]
		if !ok {
			continue
		}
		if mask&unix.IN_IGNORED != 0 {
			delete(w.paths, raw.Wd)
			continue
		}
		p, dir := base, mask&unix.IN_ISDIR != 0
		if name != "" {
			p = path.Join(base, name)
		}
		switch {
		case mask&unix.IN_CREATE != 0, mask&unix.IN_MOVED_TO != 0:
			emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_CREATE, p, dir)
			if dir && w.recursive {
				w.add(p)
				w.addTree(p)
			}
		case mask&unix.IN_MODIFY != 0:
			emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_MODIFY, p, dir)
		case mask&unix.IN_DELETE != 0:
			emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_REMOVE, p, dir)
		case mask&unix.IN_MOVED_FROM != 0:
			emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_RENAME, p, dir)
		case mask&unix.IN_DELETE_SELF != 0:
			// A watched subdirectory's removal was reported by its parent.
			if base == w.root {
				emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_REMOVE, p, dir)
			}
		case mask&unix.IN_MOVE_SELF != 0:
			if base == w.root {
				emit(agentv1.WatchEventType_WATCH_EVENT_TYPE_RENAME, p, dir)
			}
		}
	}
	return evs
}
