package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procMem is the memory of a set of host processes, in KiB.
type procMem struct {
	pids     []int
	rss, pss int64
}

// runscProcs returns the host processes of container id: every runsc
// process (runsc, runsc-sandbox, runsc-gofer, by argv[0] or executable)
// whose command line holds id.
func runscProcs(id string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		isRunsc := strings.HasPrefix(filepath.Base(string(args[0])), "runsc") ||
			strings.HasPrefix(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), "runsc")
		if !isRunsc {
			continue
		}
		for _, a := range args[1:] {
			if bytes.Contains(a, []byte(id)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// memOf sums Rss and Pss of smaps_rollup over pids. A process that is
// gone is skipped.
func memOf(pids []int) procMem {
	m := procMem{pids: pids}
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			var dst *int64
			switch k {
			case "Rss":
				dst = &m.rss
			case "Pss":
				dst = &m.pss
			default:
				continue
			}
			if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
				*dst += n
			}
		}
		f.Close()
	}
	return m
}

// memAvailable returns /proc/meminfo's MemAvailable in KiB.
func memAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}

// idleMem is what the memory figure reports for a group of idle sandboxes.
type idleMem struct {
	rss, pss dist    // per sandbox, MiB
	procs    dist    // host processes per sandbox
	delta    float64 // MemAvailable drop per sandbox, MiB
}

// measureIdle measures the sandboxes ids (started after MemAvailable read
// before, in KiB).
func measureIdle(ids []string, before int64) (idleMem, error) {
	after, err := memAvailable()
	if err != nil {
		return idleMem{}, err
	}
	var im idleMem
	for _, id := range ids {
		m := memOf(runscProcs(id))
		if len(m.pids) == 0 {
			return idleMem{}, fmt.Errorf("no runsc process found for %s", id)
		}
		im.rss = append(im.rss, float64(m.rss)/1024)
		im.pss = append(im.pss, float64(m.pss)/1024)
		im.procs = append(im.procs, float64(len(m.pids)))
	}
	im.delta = float64(before-after) / 1024 / float64(len(ids))
	return im, nil
}
