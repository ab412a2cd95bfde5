package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// debianBuilder makes a minimal Debian root with debootstrap.
type debianBuilder struct {
	mirror string // empty: from the host's apt sources
	aptDir string
	suite  string
}

// debianVersion changes whenever build's output changes for the same inputs.
const debianVersion = "1"

func (b debianBuilder) mirrorURL() (string, error) {
	if b.mirror != "" {
		return b.mirror, nil
	}
	return aptMirror(b.aptDir, b.suite)
}

func (b debianBuilder) cacheKey(ctx context.Context) (string, error) {
	m, err := b.mirrorURL()
	if err != nil {
		return "", err
	}
	return "debian-slim v" + debianVersion + " minbase " + b.suite + " " + m, nil
}

func (b debianBuilder) build(ctx context.Context, dir string, progress io.Writer) (ImageConfig, error) {
	mirror, err := b.mirrorURL()
	if err != nil {
		return ImageConfig{}, err
	}
	bin, err := exec.LookPath("debootstrap")
	if err != nil {
		return ImageConfig{}, errdefs.FailedPrecondition("debian-slim needs debootstrap: %v", err)
	}
	cmd := exec.CommandContext(ctx, bin, "--variant=minbase", b.suite, dir, mirror)
	lines := &lineWriter{w: progress}
	defer lines.Flush()
	cmd.Stdout, cmd.Stderr = lines, lines // os/exec serialises writes to one writer
	// debootstrap runs dpkg in a chroot: cancel the whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return ImageConfig{}, fmt.Errorf("debootstrap %s %s: %w", b.suite, mirror, err)
	}
	if err := cleanDebian(dir); err != nil {
		return ImageConfig{}, fmt.Errorf("clean debian tree: %w", err)
	}
	return ImageConfig{Env: []string{defaultPath}, Workdir: "/"}, nil
}

// cleanDebian removes package caches, lists and logs, and replaces the host
// files debootstrap copied in (hostname, resolv.conf) with placeholders.
func cleanDebian(dir string) error {
	for _, pattern := range []string{
		"var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
		"var/lib/apt/lists/*_*", "var/lib/apt/lists/partial/*", "var/log/*.log", "var/log/apt/*",
		"var/cache/debconf/*-old", "var/lib/dpkg/*-old", "tmp/*", "var/tmp/*",
	} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	for name, body := range map[string]string{
		"etc/hostname":    "sandbox\n",
		"etc/resolv.conf": "",
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	} {
		p := filepath.Join(dir, name)
		os.Remove(p) // may be a symlink
		if err := writeFileMode(p, body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// aptMirror returns the first URI the host's apt sources give for suite:
// deb822 files (sources.list.d/*.sources) first, then one-line files
// (sources.list.d/*.list, sources.list).
func aptMirror(aptDir, suite string) (string, error) {
	deb822, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.sources"))
	lists, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.list"))
	sort.Strings(deb822)
	sort.Strings(lists)
	lists = append(lists, filepath.Join(aptDir, "sources.list"))
	for _, f := range deb822 {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if u := mirrorFromDeb822(string(raw), suite); u != "" {
			return u, nil
		}
	}
	for _, f := range lists {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if u := mirrorFromList(string(raw), suite); u != "" {
			return u, nil
		}
	}
	return "", errdefs.FailedPrecondition("no apt source for suite %q under %s: set the Debian mirror in the config", suite, aptDir)
}

func mirrorFromDeb822(text, suite string) string {
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(stanza))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(sc.Text(), " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if strings.EqualFold(fields["enabled"], "no") || !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], suite) {
			continue
		}
		if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
			return uris[0]
		}
	}
	return ""
}

func mirrorFromList(text, suite string) string {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options: [arch=amd64 signed-by=...]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && f[1] == suite {
			return f[0]
		}
	}
	return ""
}

func hasWord(list, w string) bool {
	for _, x := range strings.Fields(list) {
		if x == w {
			return true
		}
	}
	return false
}

// lineWriter hands w whole lines, one per Write.
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.w.Write(l.buf[:i+1]) // progress is best effort
		l.buf = l.buf[i+1:]
	}
}

// Flush writes a last unterminated line, if any.
func (l *lineWriter) Flush() {
	if len(l.buf) > 0 {
		l.w.Write(append(l.buf, '\n'))
		l.buf = nil
	}
}
