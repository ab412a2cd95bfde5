// Command sandboxd is the daemon that owns the sandboxes of one machine.
//
//	sandboxd serve   [--data-dir DIR] [--listen HOST:PORT] ...
//	sandboxd prepare [--data-dir DIR]      # build or import the base images
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "sandboxd",
		Short:         "sandboxd runs untrusted code in gVisor sandboxes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var cfg Config
	cfg.AddFlags(root.PersistentFlags())
	root.AddCommand(serveCmd(&cfg), prepareCmd(&cfg))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(1)
	}
}
