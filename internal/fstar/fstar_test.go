package fstar

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o750)
	os.WriteFile(filepath.Join(src, "d", "x"), []byte("hello"), 0o755)
	os.Chmod(filepath.Join(src, "d", "x"), os.ModeSetuid|0o755)
	os.Symlink("/", filepath.Join(src, "root"))
	var b bytes.Buffer
	if err := Write(&b, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	st, err := Extract(&b, dst)
	if err != nil || st.Entries != 4 || st.Bytes != 5 {
		t.Fatalf("got %+v, %v; want 4 entries, 5 bytes", st, err)
	}
	for name, want := range map[string]os.FileMode{"d": os.ModeDir | 0o750, "d/x": os.ModeSetuid | 0o755, "root": os.ModeSymlink | 0o777} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: got %v, %v; want %v", name, fi.Mode(), err, want)
		}
	}
}

// TestExtractConfined feeds archives an untrusted sandbox could send: none
// may write outside the destination.
func TestExtractConfined(t *testing.T) {
	type entry struct {
		name, link string
		typ        byte
	}
	tests := []struct {
		name    string
		entries []entry
	}{
		{"dot-dot name", []entry{{"../escaped", "", tar.TypeReg}}},
		{"absolute name", []entry{{"/escaped", "", tar.TypeReg}}},
		{"through an absolute symlink", []entry{{"./l", "OUT", tar.TypeSymlink}, {"./l/escaped", "", tar.TypeReg}}},
		{"through a relative symlink", []entry{{"./l", "../../..OUT", tar.TypeSymlink}, {"./l/escaped", "", tar.TypeReg}}},
		{"hard link out", []entry{{"./h", "../../etc/passwd", tar.TypeLink}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			tw.WriteHeader(&tar.Header{Name: ".", Typeflag: tar.TypeDir, Mode: 0o755})
			for _, e := range tt.entries {
				link := e.link
				if link == "OUT" {
					link = out
				} else if len(link) > 3 && link[len(link)-3:] == "OUT" {
					link = link[:len(link)-3] + out
				}
				tw.WriteHeader(&tar.Header{Name: e.name, Linkname: link, Typeflag: e.typ, Mode: 0o644, Size: int64(len("x")) * boolInt(e.typ == tar.TypeReg)})
				if e.typ == tar.TypeReg {
					tw.Write([]byte("x"))
				}
			}
			tw.Close()
			dst := filepath.Join(t.TempDir(), "a", "b", "dst")
			if _, err := Extract(&b, dst); err == nil {
				t.Errorf("extract succeeded, want a refusal")
			}
			for _, p := range []string{filepath.Join(out, "escaped"), filepath.Join(filepath.Dir(dst), "escaped")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was written outside the destination", p)
				}
			}
		})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
