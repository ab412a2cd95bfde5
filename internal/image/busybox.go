package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// busyboxBuilder makes a minimal root from the host's static busybox: the
// binary, a symlink per applet, and the few files programs expect.
type busyboxBuilder struct {
	bin string
}

// busyboxVersion changes whenever build's output changes for the same binary
// (2: /tmp became sticky; entries of version 1 lack it).
const busyboxVersion = "2"

// defaultPath is the PATH base images set.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (b busyboxBuilder) cacheKey(ctx context.Context) (string, error) {
	f, err := os.Open(b.bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "busybox v" + busyboxVersion + " " + hex.EncodeToString(h.Sum(nil)), nil
}

func (b busyboxBuilder) build(ctx context.Context, dir string, progress io.Writer) (ImageConfig, error) {
	list, err := exec.CommandContext(ctx, b.bin, "--list-full").Output()
	if err != nil {
		return ImageConfig{}, fmt.Errorf("%s --list-full: %w", b.bin, err)
	}
	dirs := map[string]os.FileMode{
		"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
		"usr/local": 0o755, "usr/local/bin": 0o755, "etc": 0o755, "tmp": os.ModeSticky | 0o777, "root": 0o700,
		"dev": 0o755, "proc": 0o555, "sys": 0o555, "var": 0o755, "home": 0o755,
	}
	for d, mode := range dirs {
		if err := mkdirMode(filepath.Join(dir, d), mode); err != nil {
			return ImageConfig{}, err
		}
	}
	if err := fsutil.CopyFile(b.bin, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return ImageConfig{}, err
	}
	n := 0
	for _, applet := range strings.Fields(string(list)) {
		rel := path.Clean(strings.TrimPrefix(applet, "/"))
		if rel == "bin/busybox" || strings.HasPrefix(rel, "..") || !strings.Contains(rel, "/") {
			continue
		}
		p := filepath.Join(dir, rel)
		if err := mkdirMode(filepath.Dir(p), 0o755); err != nil {
			return ImageConfig{}, err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !os.IsExist(err) {
			return ImageConfig{}, err
		}
		n++
	}
	files := []struct {
		name, body string
		mode       os.FileMode
	}{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644},
		{"etc/group", "root:x:0:\nnobody:x:65534:\n", 0o644},
		{"etc/hostname", "sandbox\n", 0o644},
		{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0o644},
		{"etc/resolv.conf", "", 0o644}, // the runtime mounts the real one
	}
	for _, f := range files {
		if err := writeFileMode(filepath.Join(dir, f.name), f.body, f.mode); err != nil {
			return ImageConfig{}, err
		}
	}
	fmt.Fprintf(progress, "busybox: %d applets linked\n", n)
	if err := zeroMtimes(dir); err != nil {
		return ImageConfig{}, err
	}
	return ImageConfig{Env: []string{defaultPath}, Workdir: "/"}, nil
}

// mkdirMode makes dir and its missing parents, setting the mode exactly
// (regardless of umask) on dir.
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

func writeFileMode(name, body string, mode os.FileMode) error {
	if err := os.WriteFile(name, []byte(body), mode); err != nil {
		return err
	}
	return os.Chmod(name, mode)
}

// zeroMtimes sets every mtime in the tree (links included, not followed) to
// the Unix epoch, children before their directories, so builds reproduce.
func zeroMtimes(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := lutimesEpoch(paths[i]); err != nil {
			return err
		}
	}
	return nil
}
