package main

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

func newVersionCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the client's version and the podman service's",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVersion(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
}

func runVersion(ctx context.Context, g *globalOptions, stdout io.Writer) error {
	fmt.Fprintf(stdout, "Client:\n  Version:     %s\n  Go version:  %s\n  API version: %s (requested)\n", Version, runtime.Version(), podman.APIVersion)
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Server (%s):\n  Podman:      %s\n  API version: %s\n  OCI runtime: %s %s\n  CRIU:        not reported by the podman API\n",
		c.URI, info.Version.Version, info.Version.APIVersion, info.Host.OCIRuntime.Name, firstLine(info.Host.OCIRuntime.Version))
	return nil
}

func firstLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}
