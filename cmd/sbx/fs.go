package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// fsCmd is "sbx fs": the file API of a sandbox, one subcommand per call.
type fsCmd struct {
	a         *app
	recursive bool
	parents   bool
	timeout   time.Duration
}

func newFsCmd(a *app) *cobra.Command {
	c := &fsCmd{a: a}
	root := &cobra.Command{
		Use:   "fs",
		Short: "Read, write, list and watch files inside a sandbox",
		Long:  "Files inside a sandbox (ID or APP/NAME), through its agent. Paths are absolute.",
	}
	ls := &cobra.Command{Use: "ls [-R] ID PATH", Short: "List a directory", Args: withUsage(cobra.ExactArgs(2)), RunE: c.ls}
	ls.Flags().BoolVarP(&c.recursive, "recursive", "R", false, "list the whole tree")
	mkdir := &cobra.Command{Use: "mkdir [-p] ID PATH", Short: "Make a directory", Args: withUsage(cobra.ExactArgs(2)), RunE: c.mkdir}
	mkdir.Flags().BoolVarP(&c.parents, "parents", "p", false, "make parents as needed; no error if it exists")
	rm := &cobra.Command{Use: "rm [-r] ID PATH", Short: "Remove a file or empty directory", Args: withUsage(cobra.ExactArgs(2)), RunE: c.rm}
	rm.Flags().BoolVarP(&c.recursive, "recursive", "r", false, "remove a whole tree (no error if missing)")
	watch := &cobra.Command{Use: "watch [-R] [--timeout DUR] ID PATH", Short: "Print changes, one event a line",
		Args: withUsage(cobra.ExactArgs(2)), RunE: c.watch}
	watch.Flags().BoolVarP(&c.recursive, "recursive", "R", false, "watch the whole tree")
	watch.Flags().Var(durationFlag{&c.timeout}, "timeout", "stop after a duration (30s, 5m) or seconds")
	root.AddCommand(ls, mkdir, rm, watch,
		&cobra.Command{Use: "cat ID PATH", Short: "Print a file", Args: withUsage(cobra.ExactArgs(2)), RunE: c.cat},
		&cobra.Command{Use: "write ID PATH", Short: "Write stdin to a file (created or truncated)", Args: withUsage(cobra.ExactArgs(2)), RunE: c.write},
		&cobra.Command{Use: "stat ID PATH", Short: "Describe a file", Args: withUsage(cobra.ExactArgs(2)), RunE: c.stat},
		&cobra.Command{Use: "mv ID SRC DST", Short: "Rename or move a file", Args: withUsage(cobra.ExactArgs(3)), RunE: c.mv},
	)
	return root
}

// files returns the file API of the sandbox named by ref.
func (c *fsCmd) files(ctx context.Context, ref string) (*sandboxd.Files, error) {
	client, err := c.a.newClient()
	if err != nil {
		return nil, err
	}
	sb, err := sandboxRef(ctx, client, ref)
	if err != nil {
		return nil, err
	}
	return sb.Files(), nil
}

// fileLine renders one file as "MODE SIZE MTIME PATH[ -> TARGET]".
func fileLine(fi sandboxd.FileInfo) string {
	mode := fi.Mode.String()
	switch fi.Type {
	case sandboxd.TypeDirectory:
		mode = "d" + mode[1:]
	case sandboxd.TypeSymlink:
		mode = "l" + mode[1:]
	case sandboxd.TypeOther:
		mode = "?" + mode[1:]
	}
	s := fmt.Sprintf("%s\t%d\t%s\t%s", mode, fi.Size, fi.ModTime.UTC().Format(time.RFC3339), fi.Path)
	if fi.SymlinkTarget != "" {
		s += " -> " + fi.SymlinkTarget
	}
	return s
}

func (c *fsCmd) ls(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	list, err := f.List(cmd.Context(), args[1], c.recursive)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.a.stdout, 0, 4, 1, ' ', tabwriter.AlignRight)
	for _, fi := range list {
		fmt.Fprintln(tw, fileLine(fi))
	}
	return tw.Flush()
}

func (c *fsCmd) stat(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	fi, err := f.Stat(cmd.Context(), args[1])
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.a.stdout, "path: %s\ntype: %s\nsize: %d\nmode: %#o\nmtime: %s\nuid: %d\ngid: %d\n",
		fi.Path, fi.Type, fi.Size, fi.Mode.Perm(), fi.ModTime.UTC().Format(time.RFC3339Nano), fi.UID, fi.GID)
	if err == nil && fi.SymlinkTarget != "" {
		_, err = fmt.Fprintf(c.a.stdout, "target: %s\n", fi.SymlinkTarget)
	}
	return err
}

func (c *fsCmd) cat(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	r, err := f.Open(cmd.Context(), args[1])
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(c.a.stdout, r)
	return err
}

func (c *fsCmd) write(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	_, err = f.WriteFrom(cmd.Context(), args[1], c.a.stdin, nil)
	return err
}

func (c *fsCmd) mkdir(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	if c.parents {
		return f.MkdirAll(cmd.Context(), args[1])
	}
	return f.Mkdir(cmd.Context(), args[1], 0)
}

func (c *fsCmd) rm(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	if c.recursive {
		return f.RemoveAll(cmd.Context(), args[1])
	}
	return f.Remove(cmd.Context(), args[1])
}

func (c *fsCmd) mv(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return f.Rename(cmd.Context(), args[1], args[2])
}

// watch prints "TYPE PATH" lines (a trailing "/" marks a directory) until
// the timeout passes or sbx is interrupted.
func (c *fsCmd) watch(cmd *cobra.Command, args []string) error {
	f, err := c.files(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	w, err := f.Watch(cmd.Context(), args[1], &sandboxd.WatchOptions{Recursive: c.recursive, Timeout: c.timeout})
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := ev.Path
		if ev.IsDir {
			p += "/"
		}
		if _, err := fmt.Fprintf(c.a.stdout, "%s %s\n", ev.Type, p); err != nil {
			return err
		}
	}
}
