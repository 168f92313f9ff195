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
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client's version and the podman service's",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The document is a map: no sample to check fields against.
			if err := out.check(nil); err != nil {
				return err
			}
			if !out.text() {
				return versionJSON(cmd.Context(), g, out, cmd.OutOrStdout())
			}
			return runVersion(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
	out = addOutputFlags(cmd.Flags())
	return cmd
}

// versionJSON prints one document, as JSON or through a --format
// template ('{{.server.podman}}'); it needs the server, so nothing is
// printed when the service cannot be reached.
func versionJSON(ctx context.Context, g *globalOptions, out *outputFlags, stdout io.Writer) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	return out.write(stdout, map[string]any{
		"client": map[string]string{"version": Version, "goVersion": runtime.Version(), "apiVersion": podman.APIVersion},
		"server": map[string]string{
			"uri": c.URI, "podman": info.Version.Version, "apiVersion": info.Version.APIVersion,
			"ociRuntime": info.Host.OCIRuntime.Name, "ociRuntimeVersion": firstLine(info.Host.OCIRuntime.Version),
			"criu": c.CRIUVersion(ctx),
		},
	})
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
	criu := c.CRIUVersion(ctx)
	if criu == "" {
		criu = "unknown (the podman API does not report it, and the service is not on this machine)"
	}
	fmt.Fprintf(stdout, "Server (%s):\n  Podman:      %s\n  API version: %s\n  OCI runtime: %s %s\n  CRIU:        %s\n",
		c.URI, info.Version.Version, info.Version.APIVersion, info.Host.OCIRuntime.Name, firstLine(info.Host.OCIRuntime.Version), criu)
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
