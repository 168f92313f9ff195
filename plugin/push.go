package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/podman-migrate/podman-migrate/export"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

type pushOptions struct {
	global         *globalOptions
	leaveRunning   bool
	tlsVerify      bool
	authFile       string
	compression    string
	tcpEstablished bool
	fileLocks      bool
	ignoreRootfs   bool
	includeBase    bool
	noCRIO         bool
	seal           *sealFlags
	format         string
	retry          *retryFlags
	level          int
	levelSet       func() bool
	tmpDir         string
	tlsVerifySet   func() bool
	stream         bool
	ckptTimeout    time.Duration
}

func newPushCmd(g *globalOptions) *cobra.Command {
	o := &pushOptions{global: g}
	cmd := &cobra.Command{
		Use:   "push [flags] CONTAINER DEST",
		Short: "Checkpoint a running container and publish it as an OCI image",
		Long: `Checkpoint CONTAINER with CRIU and publish the checkpoint to DEST.

DEST is a registry reference (host[:port]/repo:tag) or any containers/image
transport: docker://host/repo:tag, oci:DIR:TAG, oci-archive:FILE, dir:DIR.
The container stops (its checkpoint is kept on this host) unless
--leave-running is given; if anything fails after the checkpoint, it is
restored here. Prints DEST@DIGEST on success.

A checkpoint that takes longer than --checkpoint-timeout (CRIU < 4.2 hangs
forever on VM guests) is ended, the container runs on, and push exits 3;
after 30s it warns. A first Ctrl-C waits for the checkpoint, then restores
the container; a second stops waiting at once and prints how to recover.

--encryption-key encrypts the layers on their way to DEST (the staging copy
on this host stays plaintext, readable by root only);
--sign-by-sigstore-private-key signs the image (see the man page).`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.leaveRunning, "leave-running", false, "keep the source container running (copy, not move)")
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to the registry")
	f.StringVar(&o.authFile, "authfile", "", "path of the authentication file (default: podman login's)")
	f.StringVar(&o.compression, "compression-format", "zstd", "layer compression: zstd or gzip")
	f.BoolVar(&o.tcpEstablished, "tcp-established", false, "checkpoint established TCP connections")
	f.BoolVar(&o.fileLocks, "file-locks", false, "checkpoint file locks")
	f.BoolVar(&o.ignoreRootfs, "ignore-rootfs", false, "leave root file-system changes out of the image")
	f.BoolVar(&o.includeBase, "include-base", false, "also copy the container's base image into DEST's repository (tag base-IMAGEID), for targets that cannot pull it from its origin; registry destinations only")
	f.BoolVar(&o.noCRIO, "no-cri-o-annotations", false, "leave out what CRI-O needs to restore the image (its manifest annotation, spec.dump's io.kubernetes.cri-o.Annotations, config.dump's rootfsImageRef)")
	f.StringVar(&o.format, "format", "text", "output: text (DEST@DIGEST) or json (reference, digest, container, per-phase seconds, bytes, layers)")
	o.seal = addSealFlags(f)
	o.retry = addRetryFlags(f)
	f.IntVar(&o.level, "compression-level", 0, "compression level (zstd 1-20, gzip 1-9; default: the library's, zstd 3)")
	o.levelSet = func() bool { return f.Changed("compression-level") }
	f.StringVar(&o.tmpDir, "tmpdir", "", "staging directory for the image (default $TMPDIR, else /var/tmp); needs room for the container's memory")
	o.tlsVerifySet = func() bool { return f.Changed("tls-verify") }
	f.BoolVar(&o.stream, "stream-layers", true, "upload the CRIU layer to a registry while it is built; false stages the whole image first")
	f.DurationVar(&o.ckptTimeout, "checkpoint-timeout", defaultCRIUTimeout, checkpointTimeoutHelp)
	return cmd
}

func (o *pushOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	if err := outputFormat(o.format); err != nil {
		return err
	}
	if err := o.seal.check(args[1]); err != nil {
		return err
	}
	c, err := o.global.rootfulClient(ctx)
	if err != nil {
		return err
	}
	res, err := export.Push(ctx, c, export.PushOptions{
		Container:         args[0],
		Dest:              args[1],
		LeaveRunning:      o.leaveRunning,
		TCPEstablished:    o.tcpEstablished,
		FileLocks:         o.fileLocks,
		IgnoreRootfs:      o.ignoreRootfs,
		IncludeBase:       o.includeBase,
		NoCRIOAnnotations: o.noCRIO,
		Compression:       o.compression,
		CompressionLevel:  levelOf(o.levelSet(), o.level),
		NoStream:          !o.stream,
		Transfer: o.retry.set(o.seal.set(transfer.Options{
			TLSVerify: transfer.TLSVerify(o.tlsVerifySet(), o.tlsVerify),
			AuthFile:  o.authFile,
			Report:    o.global.log(),
			UserAgent: "podman-migrate/" + Version,
		})),
		ToolVersion: Version,
		TmpDir:      o.tmpDir,
		Log:         o.global.log(),

		CheckpointTimeout: o.ckptTimeout,
		StopWaiting:       secondInterrupt(ctx),
	})
	if err != nil {
		return fmt.Errorf("pushing %q to %q: %w", args[0], args[1], err)
	}
	if o.format == "json" {
		return writeJSON(stdout, res)
	}
	_, err = fmt.Fprintf(stdout, "%s@%s\n", res.Reference, res.Digest)
	return err
}

// levelOf is nil when --compression-level was not given.
func levelOf(set bool, v int) *int {
	if !set {
		return nil
	}
	return &v
}
