package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newCpCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the local machine and a sandbox",
		Long: "Copy a file or directory tree into or out of a sandbox. One side is ID:/abs/path\n" +
			"(or APP/NAME:/abs/path), the other a local path. As with cp -r, a directory DST\n" +
			"receives SRC under its own name. Modes and symlinks are kept (links are copied as\n" +
			"links); ownership is not.",
		Args: withUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCp(cmd.Context(), a, args[0], args[1])
		},
	}
}

// remotePath splits "REF:/abs/path"; ok is false for a local path (one
// starting with "/" or ".", or without a colon).
func remotePath(s string) (ref, p string, ok bool) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", "", false
	}
	ref, p, ok = strings.Cut(s, ":")
	if !ok || ref == "" {
		return "", "", false
	}
	return ref, p, true
}

func runCp(ctx context.Context, a *app, src, dst string) error {
	sref, spath, sremote := remotePath(src)
	dref, dpath, dremote := remotePath(dst)
	if sremote == dremote {
		return errors.New("cp: exactly one of SRC and DST must be ID:/path")
	}
	client, err := a.newClient()
	if err != nil {
		return err
	}
	ref, rpath := dref, dpath
	if sremote {
		ref, rpath = sref, spath
	}
	if !strings.HasPrefix(rpath, "/") {
		return fmt.Errorf("cp: %q: the sandbox path must be absolute", rpath)
	}
	sb, err := sandboxRef(ctx, client, ref)
	if err != nil {
		return err
	}
	if sremote {
		if err := sb.Files().CopyFrom(ctx, spath, dst); err != nil {
			return fmt.Errorf("cp %s %s: %w", src, dst, err)
		}
		return nil
	}
	if err := sb.Files().CopyTo(ctx, src, dpath); err != nil {
		return fmt.Errorf("cp %s %s: %w", src, dst, err)
	}
	return nil
}
