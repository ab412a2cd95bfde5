package image

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The extractor sets owner and mode through the new file's descriptor and
// skips what open(2) already got right; whatever the shortcuts, every file
// must end as its entry says.
func TestExtractOwnersAndModes(t *testing.T) {
	requireRoot(t) // ownership
	mt := time.Unix(1_650_000_000, 0)
	hdr := func(name string, typ byte, mode int64, uid, gid int) entry {
		return entry{hdr: tar.Header{Name: name, Typeflag: typ, Mode: mode, Uid: uid, Gid: gid, ModTime: mt}}
	}
	file := func(name, body string, mode int64, uid, gid int) entry {
		e := hdr(name, tar.TypeReg, mode, uid, gid)
		e.body = body
		return e
	}
	entries := []entry{
		file("plain", "a", 0o644, 0, 0),
		file("umasked", "b", 0o666, 0, 0),
		file("setuid", "c", 0o4755, 7, 8),
		file("group", "d", 0o600, 0, 5),
		file("sticky", "e", 0o1644, 0, 0),
		// A directory made implicitly, then described as setgid while it is
		// the cached parent: files made after it inherit its group.
		file("sg/x", "f", 0o644, 0, 0),
		hdr("sg/", tar.TypeDir, 0o2775, 0, 9),
		file("sg/y", "g", 0o644, 0, 0),
		file("sg/z", "h", 0o644, 0, 9),
		// Names given twice: the later entry wins, whatever the types.
		file("dup", "first", 0o644, 0, 0),
		file("dup", "second", 0o640, 3, 3),
		hdr("dir-then-file/", tar.TypeDir, 0o755, 0, 0),
		file("dir-then-file/child", "i", 0o644, 0, 0),
		file("dir-then-file", "j", 0o600, 0, 0),
		file("file-then-dir", "k", 0o644, 0, 0),
		hdr("file-then-dir/", tar.TypeDir, 0o750, 4, 4),
		file("file-then-dir/child", "l", 0o644, 0, 0),
	}
	type want struct {
		mode     uint32
		uid, gid uint32
		body     string
	}
	wants := map[string]want{
		"plain": {0o644, 0, 0, "a"}, "umasked": {0o666, 0, 0, "b"}, "setuid": {0o4755, 7, 8, "c"},
		"group": {0o600, 0, 5, "d"}, "sticky": {0o1644, 0, 0, "e"},
		"sg/x": {0o644, 0, 0, "f"}, "sg/y": {0o644, 0, 0, "g"}, "sg/z": {0o644, 0, 9, "h"},
		"dup": {0o640, 3, 3, "second"}, "dir-then-file": {0o600, 0, 0, "j"},
		"file-then-dir/child": {0o644, 0, 0, "l"},
	}
	for _, umask := range []int{0o022, 0o077, 0} {
		t.Run(fmt.Sprintf("umask %03o", umask), func(t *testing.T) {
			old := unix.Umask(umask)
			defer unix.Umask(old)
			dir := t.TempDir()
			must(t, extractTar(context.Background(), buildTar(t, entries...), dir))
			for name, w := range wants {
				var st unix.Stat_t
				must(t, unix.Lstat(filepath.Join(dir, name), &st))
				body, _ := os.ReadFile(filepath.Join(dir, name))
				if st.Mode&0o7777 != w.mode || st.Uid != w.uid || st.Gid != w.gid || string(body) != w.body {
					t.Errorf("%s: got mode %o owner %d:%d body %q; want %o %d:%d %q",
						name, st.Mode&0o7777, st.Uid, st.Gid, body, w.mode, w.uid, w.gid, w.body)
				}
				if st.Mtim.Sec != mt.Unix() {
					t.Errorf("%s: got mtime %d, want %d", name, st.Mtim.Sec, mt.Unix())
				}
			}
			var st unix.Stat_t
			must(t, unix.Lstat(filepath.Join(dir, "file-then-dir"), &st))
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != 0o750 || st.Uid != 4 {
				t.Errorf("file-then-dir: got mode %o owner %d, want a directory 750 owned by 4", st.Mode, st.Uid)
			}
		})
	}
}

func TestExtractorPlan(t *testing.T) {
	many := make([]entry, 0, fsyncMax+1)
	for i := range fsyncMax + 1 {
		many = append(many, reg(fmt.Sprintf("m/f%03d", i), "x"))
	}
	tests := []struct {
		name      string
		entries   []entry
		under     string
		wantOK    bool
		wantFiles []string
		wantDirs  []string
	}{
		{"files and directories", []entry{reg("a/b/f", "1"), reg("g", "2")}, "", true,
			[]string{"a/b/f", "g"}, []string{"a/b", "a"}},
		{"below a directory", []entry{reg("a/b/f", "1"), reg("g", "2")}, "a", true,
			[]string{"a/b/f"}, []string{"a/b", "a"}},
		{"a symlink", []entry{reg("f", "1"), {hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "f"}}}, "", false, nil, nil},
		{"a whiteout", []entry{reg("f", "1"), reg(".wh.gone", "")}, "", false, nil, nil},
		{"too many", many, "", false, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "a whiteout" {
				requireRoot(t) // mknod
			}
			x, err := newExtractor(t.TempDir())
			must(t, err)
			defer x.close()
			must(t, x.readTar(context.Background(), buildTar(t, tc.entries...)))
			p := x.plan(tc.under)
			if p.ok != tc.wantOK || fmt.Sprint(p.files) != fmt.Sprint(tc.wantFiles) || fmt.Sprint(p.dirs) != fmt.Sprint(tc.wantDirs) {
				t.Fatalf("got %v %v %v, want %v %v %v", p.files, p.dirs, p.ok, tc.wantFiles, tc.wantDirs, tc.wantOK)
			}
			if tc.under == "a" { // rebased on a, a being the new root
				b := p.below("a")
				if fmt.Sprint(b.files) != "[b/f]" || fmt.Sprint(b.dirs) != "[b]" || !b.ok {
					t.Fatalf("below a: got %v %v %v, want [b/f] [b] true", b.files, b.dirs, b.ok)
				}
			}
		})
	}
}

func TestTrash(t *testing.T) {
	tr := newTrash(testLogger(t))
	tr.wait() // nothing queued: returns at once
	root := t.TempDir()
	var dirs []string
	for round := range 2 { // a second round starts a new worker
		for i := range 5 {
			d := filepath.Join(root, fmt.Sprintf("r%d-%d", round, i))
			must(t, os.MkdirAll(filepath.Join(d, "x/y"), 0o755))
			must(t, os.WriteFile(filepath.Join(d, "x/y/f"), []byte("z"), 0o644))
			dirs = append(dirs, d)
			tr.add(d)
		}
		tr.wait()
		for _, d := range dirs {
			if _, err := os.Lstat(d); !os.IsNotExist(err) {
				t.Fatalf("round %d: %s: got %v, want it removed", round, d, err)
			}
		}
	}
}
