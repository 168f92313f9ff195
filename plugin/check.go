package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// Bounds of the steps other than checkpoint and restore (--timeout).
const (
	infoTimeout   = 15 * time.Second
	probeTimeout  = 20 * time.Second // criu check, runtime --version
	createTimeout = 30 * time.Second // create, or start
	removeTimeout = 30 * time.Second
	maxCandidates = 3 // images tried when --image is not given
)

// listenTimeout bounds the wait for the listener (a variable for tests).
var listenTimeout = 15 * time.Second

// checkLabel marks the throwaway containers, so that one left behind by a
// killed check can be found: podman ps -a --filter label=io.podman-migrate.check.
const checkLabel = "io.podman-migrate.check"

// listenCommand listens on TCP with what busybox images have: CRIU < 4.2
// fails on inet sockets on kernels >= 6.16, so the test must hold one.
var listenCommand = []string{"sh", "-c", "httpd -f -p 8080 || nc -lk -p 8080 || nc -l -p 8080"}

// errNoImage is wrapped when there is no image to test with: --image is
// not on the host, or no image there runs a TCP listener (exit 5).
var errNoImage = fault.New(fault.Input, "no image to test with")

// stuckFix is StuckHint without its advice to run check.
var stuckFix = strings.TrimPrefix(podman.StuckHint, "run `podman-migrate check` on that host; ")

// socketFix is the fix for CRIU 4.1's "sockets: Can't get 1:16 opt:
// Operation not supported" (SO_PASSCRED), measured on kernels >= 6.16.
const socketFix = "CRIU < 4.2 cannot checkpoint a process holding an inet socket on kernels >= 6.16 (SO_PASSCRED: Operation not supported): install CRIU >= 4.2"

type checkOptions struct {
	global  *globalOptions
	image   string
	timeout time.Duration
	out     *outputFlags
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	o := &checkOptions{global: g}
	cmd := &cobra.Command{
		Use:   "check [flags]",
		Short: "Test that the podman host can checkpoint and restore a running container",
		Long: `Check reports the service's podman, OCI runtime and CRIU, then creates a
throwaway container that listens on TCP, checkpoints it and restores it,
each under --timeout, and removes it again, also on failure or Ctrl-C.

Exit 0 when the host can checkpoint and restore, 3 when a podman or CRIU
step failed, 5 when --image is not on the host or no image there can run
the listener. --format json prints one document at the end; a --format
template runs on it, e.g. --format '{{.OK}}'.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.image, "image", "", "image of the throwaway container; it needs sh with httpd or nc (busybox). Default: an image on the host, newest first")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "bound of the checkpoint and of the restore")
	o.out = addOutputFlags(f)
	return cmd
}

func (o *checkOptions) run(ctx context.Context, _ []string, stdout io.Writer) error {
	if err := o.out.check(&checkReport{}); err != nil {
		return err
	}
	if o.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: want a positive duration", o.timeout)}
	}
	c, err := o.global.client(ctx)
	if err != nil {
		return err
	}
	k := &checker{c: c, probe: newHostProbe(c), timeout: o.timeout, log: o.global.log()}
	_, err = k.probe.ServicePID()
	k.local = err == nil
	if o.out.text() {
		k.out = stdout
	}
	k.rep.Server.URI = c.URI
	err = k.run(ctx, o.image)
	k.rep.OK = err == nil
	if !o.out.text() {
		if jerr := o.out.write(stdout, &k.rep); jerr != nil && err == nil {
			err = jerr
		}
	} else if err == nil {
		fmt.Fprintf(stdout, "ok: %s can checkpoint and restore a running container\n", c.URI)
	} else if ctx.Err() != nil {
		fmt.Fprintf(stdout, "FAIL: the check of %s was interrupted\n", c.URI)
	} else {
		fmt.Fprintf(stdout, "FAIL: %s cannot checkpoint and restore a running container\n", c.URI)
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", c.URI, err)
	}
	return nil
}

// hostProbe is what check asks of the service's own machine.
type hostProbe interface {
	ServicePID() (int, error)
	CRIUCheck(ctx context.Context) (*podman.CRIUReport, error)
	RuntimeVersion(ctx context.Context, runtime string) (string, error)
	EndStuckCRIU(ctrID, op string) ([]int, error)
}

// newHostProbe is replaced in tests: their fake service listens on a
// local socket, but this machine's CRIU is not the one under test.
var newHostProbe = func(c *podman.Client) hostProbe { return c }

// checkReport is check's --format json document, and what a --format
// template runs on.
type checkReport struct {
	Server struct {
		URI        string `json:"uri"`
		Podman     string `json:"podman"`
		APIVersion string `json:"apiVersion"`
		Rootful    bool   `json:"rootful"`
		Kernel     string `json:"kernel"`
	} `json:"server"`
	Runtime struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Path    string `json:"path"`
		CRIU    *bool  `json:"criu"` // null: cannot tell
	} `json:"runtime"`
	CRIU struct {
		Known bool `json:"known"` // false when the service is not on this machine
		*podman.CRIUReport
	} `json:"criu"`
	Steps []checkStep `json:"steps"`
	OK    bool        `json:"ok"`
}

// checkStep is one line of the report.
type checkStep struct {
	Name    string  `json:"name"`
	OK      bool    `json:"ok"`
	Warn    bool    `json:"warn,omitempty"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail"`
	Fix     string  `json:"fix,omitempty"`
}

type checker struct {
	c       *podman.Client
	probe   hostProbe
	local   bool
	timeout time.Duration
	out     io.Writer // text: a line per step as it ends
	log     io.Writer
	rep     checkReport
	kernel  [2]int
}

func (k *checker) step(name string, began time.Time, status, detail, fix string) {
	s := checkStep{Name: name, OK: status != "FAIL", Warn: status == "warn", Detail: detail, Fix: fix,
		Seconds: float64(time.Since(began).Milliseconds()) / 1000}
	k.rep.Steps = append(k.rep.Steps, s)
	if k.out != nil {
		line := fmt.Sprintf("%-4s  %-10s  %s", status, name, detail)
		if fix != "" {
			line += " (fix: " + fix + ")"
		}
		fmt.Fprintln(k.out, line)
	}
}

// fail records a failed step and returns its error, hinted with the
// step's fix.
func (k *checker) fail(name string, began time.Time, err error, fix string) error {
	k.step(name, began, "FAIL", err.Error(), fix)
	return fault.Hinted(err, fix)
}

func (k *checker) run(ctx context.Context, image string) error {
	firstErr := k.server(ctx)
	if firstErr != nil {
		return firstErr
	}
	if err := k.runtime(ctx); err != nil {
		firstErr = err
	}
	k.criu(ctx)
	// The throwaway checkpoint settles what the reports above can only
	// suggest, so it runs even after a failed runtime check.
	if err := k.container(ctx, image); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

func (k *checker) server(ctx context.Context) error {
	began := time.Now()
	ictx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	info, err := k.c.Info(ictx)
	if err != nil {
		return k.fail("server", began, err, "start the service with `podman system service --time=0`, or point --url at its socket")
	}
	s := &k.rep.Server
	s.Podman, s.APIVersion, s.Kernel, s.Rootful = info.Version.Version, info.Version.APIVersion, info.Host.Kernel, !info.Host.Security.Rootless
	k.kernel = majorMinor(s.Kernel)
	rt := &k.rep.Runtime
	rt.Name, rt.Path, rt.Version = info.Host.OCIRuntime.Name, info.Host.OCIRuntime.Path, strings.TrimSpace(info.Host.OCIRuntime.Version)
	detail := fmt.Sprintf("podman %s (API %s), kernel %s", s.Podman, s.APIVersion, s.Kernel)
	if !s.Rootful {
		return k.fail("server", began, &podman.Error{Op: "checking " + k.c.URI + ": " + detail, Err: podman.ErrRootless},
			"use the rootful socket, e.g. sudo podman-migrate check --url unix:///run/podman/podman.sock")
	}
	k.step("server", began, "ok", detail+", rootful", "")
	return nil
}

func (k *checker) runtime(ctx context.Context) error {
	began := time.Now()
	rt := &k.rep.Runtime
	if rt.Version == "" && k.local {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		name := rt.Path
		if name == "" {
			name = rt.Name
		}
		rt.Version, _ = k.probe.RuntimeVersion(pctx, name)
		cancel()
	}
	var criu *bool
	switch rt.Name {
	case "runc":
		criu = ptr(true)
	case "crun":
		// crun lists its build options, and CRIU support is one of
		// them: "+CRIU".
		if rt.Version != "" {
			criu = ptr(strings.Contains(rt.Version, "+CRIU"))
		}
	}
	rt.CRIU = criu
	detail := fmt.Sprintf("%s %s", rt.Name, versionWord(rt.Version))
	if rt.Path != "" {
		detail += " (" + rt.Path + ")"
	}
	switch {
	case criu == nil:
		k.step("runtime", began, "warn", detail+": cannot tell whether it supports CRIU; the checkpoint below tests it", "")
	case !*criu:
		return k.fail("runtime", began, &podman.Error{Op: "checking the OCI runtime", Err: fmt.Errorf("%s: built without CRIU support (no +CRIU)", detail)},
			"install runc, or a crun built with CRIU, and make it podman's runtime (containers.conf [engine] runtime)")
	default:
		k.step("runtime", began, "ok", detail+": supports CRIU", "")
	}
	return nil
}

// criu reports CRIU on a local service; its warnings do not fail the
// check, the throwaway checkpoint does.
func (k *checker) criu(ctx context.Context) {
	began := time.Now()
	if !k.local {
		k.step("criu", began, "warn", "version and features unknown from here (the service is not on this machine); the checkpoint below tests them", "")
		return
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	r, err := k.probe.CRIUCheck(pctx)
	cancel()
	if err != nil {
		k.step("criu", began, "warn", fmt.Sprintf("cannot ask CRIU (%v); the checkpoint below tests it", err), "")
		return
	}
	k.rep.CRIU.Known, k.rep.CRIU.CRIUReport = true, r
	if r.Version == "" {
		k.step("criu", began, "warn", "no criu on the service's PATH", "install CRIU >= 4.2")
		return
	}
	detail := r.Version
	if r.Path != "" {
		detail += " (" + r.Path + ")"
	}
	if len(r.Check) > 0 {
		detail += "; criu check: " + strings.Join(r.Check, "; ")
	}
	v := majorMinor(r.Version)
	modern := v[0] > 4 || v[0] == 4 && v[1] >= 2
	status, fix := "ok", ""
	switch {
	case r.Breakpoints == "broken":
		detail += "; hardware breakpoints do not fire (a VM guest), which CRIU >= 4.2 works around"
	case r.Breakpoints == "ok":
		detail += "; hardware breakpoints work"
	case !modern && r.FaultWrapper:
		detail += "; a wrapper sets CRIU_FAULT=130, so dumps do not wait for hardware breakpoints"
	case !modern:
		status, fix = "warn", stuckFix
		detail += "; CRIU < 4.2 cannot tell whether hardware breakpoints work (on VM guests where they never fire every dump hangs; the checkpoint below tests it)"
	}
	if !modern && (k.kernel[0] > 6 || k.kernel[0] == 6 && k.kernel[1] >= 16) {
		status, fix = "warn", socketFix
		detail += "; kernel >= 6.16"
	}
	k.step("criu", began, status, detail, fix)
}

// container runs the throwaway container through checkpoint and restore.
func (k *checker) container(ctx context.Context, image string) (err error) {
	began := time.Now()
	cands, err := k.images(ctx, image)
	if err != nil {
		return k.fail("create", began, err, "pull a busybox image there, or give --image")
	}
	var created []string
	defer func() {
		if rerr := k.remove(ctx, created); rerr != nil && err == nil {
			err = rerr
		}
	}()
	var id, name, port string
	var tried []string
	for _, img := range cands {
		began = time.Now()
		name = "podman-migrate-check-" + randomSuffix()
		cctx, cancel := context.WithTimeout(ctx, createTimeout)
		id, err = k.c.CreateContainer(cctx, podman.ContainerSpec{Name: name, Image: img, Command: listenCommand, Labels: map[string]string{checkLabel: "true"}})
		cancel()
		if err != nil {
			return k.fail("create", began, err, "")
		}
		created = append(created, id)
		fmt.Fprintf(k.log, "check: started %s from %s\n", name, img)
		if port, err = k.startListening(ctx, id); err == nil {
			k.step("create", began, "ok", fmt.Sprintf("%s from %s, listening on TCP port %s", name, img, port), "")
			break
		}
		if ctx.Err() != nil {
			return k.fail("create", began, err, "")
		}
		tried = append(tried, fmt.Sprintf("%s: %v", img, err))
		id = ""
	}
	if id == "" {
		return k.fail("create", began, fmt.Errorf("%w: no container listened on TCP with %q (%s)", errNoImage, strings.Join(listenCommand, " "), strings.Join(tried, "; ")),
			"give --image with an image that has sh and httpd or nc, e.g. busybox")
	}

	if err := k.criuStep(ctx, "checkpoint", id, name, k.c.CheckpointInPlace); err != nil {
		return err
	}
	if err := k.criuStep(ctx, "restore", id, name, k.c.RestoreInPlace); err != nil {
		return err
	}
	began = time.Now()
	lctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	p, err := k.listening(lctx, id)
	if err != nil {
		return k.fail("restored", began, fmt.Errorf("after the restore: %w", err), "")
	}
	k.step("restored", began, "ok", "running, listening on TCP port "+p, "")
	return nil
}

// images returns the images to try: --image, or the host's own, those
// with busybox in their name first, then the newest.
func (k *checker) images(ctx context.Context, image string) ([]string, error) {
	ictx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	if image != "" {
		_, err := k.c.InspectImage(ictx, image)
		if errors.Is(err, podman.ErrNotFound) {
			return nil, fmt.Errorf("%w: image %q is not on %s (check does not pull): %w", errNoImage, image, k.c.URI, err)
		}
		if err != nil {
			return nil, err
		}
		return []string{image}, nil
	}
	imgs, err := k.c.ListImages(ictx)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(imgs, func(a, b podman.ImageSummary) int {
		if ab, bb := isBusybox(a), isBusybox(b); ab != bb {
			if ab {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.Created, a.Created)
	})
	var names []string
	for _, img := range imgs {
		if len(names) == maxCandidates {
			break
		}
		ref := img.ID
		if len(img.RepoTags) > 0 && !strings.HasPrefix(img.RepoTags[0], "<none>") {
			ref = img.RepoTags[0]
		}
		names = append(names, ref)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: there are no images on %s", errNoImage, k.c.URI)
	}
	return names, nil
}

// isBusybox: the test image localhost/podman-migrate-test is busybox too.
func isBusybox(img podman.ImageSummary) bool {
	for _, t := range img.RepoTags {
		if strings.Contains(t, "busybox") || strings.Contains(t, "podman-migrate-test") {
			return true
		}
	}
	return false
}

// startListening starts a created container and waits for its listener.
func (k *checker) startListening(ctx context.Context, id string) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, createTimeout)
	err := k.c.StartContainer(sctx, id)
	cancel()
	if err != nil {
		return "", err
	}
	lctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	return k.listening(lctx, id)
}

// listening waits until the container runs and has a listening TCP
// socket, and returns its port.
func (k *checker) listening(ctx context.Context, id string) (string, error) {
	for {
		ctr, err := k.c.InspectContainer(ctx, id)
		if err != nil {
			return "", err
		}
		if !ctr.State.Running {
			return "", fmt.Errorf("the container is %s, not running (does the image have sh, and httpd or nc?)", ctr.State.Status)
		}
		out, err := k.c.Exec(ctx, id, []string{"cat", "/proc/net/tcp", "/proc/net/tcp6"})
		if err != nil && ctx.Err() == nil {
			return "", err
		}
		if port := listenPort(string(out)); port != "" {
			return port, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no listening TCP socket in the container: %w", ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// listenPort finds a socket in state 0A (TCP_LISTEN) in /proc/net/tcp
// format: "sl local_address rem_address st ...", address "HEXIP:HEXPORT".
func listenPort(procNetTCP string) string {
	for _, line := range strings.Split(procNetTCP, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil {
			return strconv.FormatUint(p, 10)
		}
	}
	return ""
}

// criuStep checkpoints or restores (op) the container under --timeout.
// One that does not end in time, or is interrupted, has its CRIU ended so
// that the removal does not wait behind it.
func (k *checker) criuStep(ctx context.Context, op, id, name string, call func(context.Context, string) error) error {
	began := time.Now()
	fmt.Fprintf(k.log, "check: %s of %s (up to %s)\n", op, name, k.timeout)
	sctx, cancel := context.WithTimeout(ctx, k.timeout)
	err := call(sctx, id)
	timedOut := errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err == nil {
		k.step(op, began, "ok", fmt.Sprintf("%.2fs", time.Since(began).Seconds()), "")
		return nil
	}
	if !timedOut && ctx.Err() == nil {
		fix := ""
		if msg := err.Error(); strings.Contains(msg, "Can't get 1:16 opt") || strings.Contains(msg, "sockets:") {
			fix = socketFix
		}
		return k.fail(op, began, err, fix)
	}
	ended := k.endCRIU(id, op)
	if !timedOut {
		return k.fail(op, began, fmt.Errorf("%w; %s", err, ended), "")
	}
	// The request's own error says only that the deadline passed.
	stuck := &podman.Error{Op: fmt.Sprintf("%s container %s", gerund[op], name),
		Err: fmt.Errorf("%w: no answer within --timeout %s; %s", podman.ErrCRIUStuck, k.timeout, ended)}
	return k.fail(op, began, stuck, stuckFix)
}

// endCRIU ends a stuck CRIU and says what became of it.
func (k *checker) endCRIU(id, op string) string {
	pids, err := k.probe.EndStuckCRIU(id, op)
	switch {
	case errors.Is(err, podman.ErrRemote):
		return "end CRIU on that host with: " + podman.EndStuckCRIUCommand(id, op)
	case err != nil:
		return fmt.Sprintf("ending CRIU: %v", err)
	case len(pids) == 0:
		return "no CRIU process was left to end"
	}
	// Measured: with CRIU killed the runtime fails the request, and the
	// container keeps running.
	return fmt.Sprintf("ended CRIU (PID %s), so the %s fails and the container runs on", strings.Trim(fmt.Sprint(pids), "[]"), op)
}

var gerund = map[string]string{"checkpoint": "checkpointing", "restore": "restoring"}

// remove force-removes the throwaway containers, also after Ctrl-C.
func (k *checker) remove(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	began := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	var left []string
	var firstErr error
	for _, id := range ids {
		if err := k.c.RemoveContainer(rctx, id); err != nil && !errors.Is(err, podman.ErrNotFound) {
			left = append(left, ckpt.ShortID(id))
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return k.fail("remove", began, fmt.Errorf("left behind %s: %w", strings.Join(left, " "), firstErr),
			"podman rm -f "+strings.Join(left, " ")+" on that host (podman ps -a --filter label="+checkLabel+")")
	}
	k.step("remove", began, "ok", fmt.Sprintf("removed %d throwaway container(s)", len(ids)), "")
	return nil
}

// majorMinor reads "6.16.3-amd64" or "4.1.1" as {6, 16}, {4, 1};
// {0, 0} when it cannot.
func majorMinor(v string) [2]int {
	var mm [2]int
	parts := strings.SplitN(v, ".", 3)
	for i := 0; i < 2 && i < len(parts); i++ {
		digits := strings.TrimRightFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' })
		n, err := strconv.Atoi(digits)
		if err != nil {
			return [2]int{}
		}
		mm[i] = n
	}
	return mm
}

// versionWord is the version number in a runtime's version text
// ("runc version 1.1.5\ncommit: …" gives "1.1.5").
func versionWord(v string) string {
	line := firstLine(v)
	if f := strings.Fields(line); len(f) > 0 {
		return f[len(f)-1]
	}
	return "(version unknown)"
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }
