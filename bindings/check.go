package podman

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// What `podman-migrate check` needs of the service: a throwaway container
// it creates, runs commands in, checkpoints and restores in place, and
// what the service's host would run as CRIU and OCI runtime.

// ImageSummary is what check needs of an entry in the image list.
type ImageSummary struct {
	ID       string   `json:"Id"`
	RepoTags []string `json:"RepoTags"`
	Created  int64    `json:"Created"` // Unix seconds
}

// ListImages returns the service's images.
func (c *Client) ListImages(ctx context.Context) ([]ImageSummary, error) {
	var imgs []ImageSummary
	if err := c.doJSON(ctx, "listing images", http.MethodGet, "/images/json", nil, &imgs); err != nil {
		return nil, err
	}
	return imgs, nil
}

// ContainerSpec is the part of podman's SpecGenerator that check sets.
type ContainerSpec struct {
	Name    string            `json:"name"`
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// CreateContainer creates a container and returns its ID.
func (c *Client) CreateContainer(ctx context.Context, spec ContainerSpec) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	op := fmt.Sprintf("creating container %q from %q", spec.Name, spec.Image)
	if err := c.postJSON(ctx, op, "/containers/create", spec, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		return "", &Error{Op: op, Err: errors.New("podman reported no container ID")}
	}
	return out.ID, nil
}

// StartContainer starts a created container.
func (c *Client) StartContainer(ctx context.Context, nameOrID string) error {
	return c.doJSON(ctx, fmt.Sprintf("starting container %q", nameOrID), http.MethodPost, "/containers/%s/start", nil, nil, nameOrID)
}

// CheckpointInPlace checkpoints a container into its own storage (no
// export): the container stops, and RestoreInPlace resumes it.
func (c *Client) CheckpointInPlace(ctx context.Context, nameOrID string) error {
	return c.doJSON(ctx, fmt.Sprintf("checkpointing container %q", nameOrID), http.MethodPost, "/containers/%s/checkpoint", nil, nil, nameOrID)
}

// RestoreInPlace restores a container from the checkpoint in its storage.
func (c *Client) RestoreInPlace(ctx context.Context, nameOrID string) error {
	return c.doJSON(ctx, fmt.Sprintf("restoring container %q", nameOrID), http.MethodPost, "/containers/%s/restore", nil, nil, nameOrID)
}

// Exec runs cmd in a running container and returns its standard output
// (at most 1 MiB); its exit status is not looked at.
func (c *Client) Exec(ctx context.Context, nameOrID string, cmd []string) ([]byte, error) {
	op := fmt.Sprintf("running %q in container %q", strings.Join(cmd, " "), nameOrID)
	var session struct {
		ID string `json:"Id"`
	}
	create := map[string]any{"AttachStdout": true, "AttachStderr": false, "Cmd": cmd}
	if err := c.postJSON(ctx, op, "/containers/%s/exec", create, &session, nameOrID); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]bool{"Detach": false, "Tty": false})
	// podman answers on the hijacked connection: a 200 header, then the
	// multiplexed output until the command ends and podman closes it.
	resp, err := c.do(ctx, op, http.MethodPost, "/exec/%s/start", bytes.NewReader(body), nil, jsonHeader(), session.ID)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := demuxStdout(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, &Error{Op: op, Status: resp.StatusCode, Err: fmt.Errorf("reading output: %w", err)}
	}
	return out, nil
}

// demuxStdout keeps stream 1 of Docker's multiplexed framing (8-byte
// header: stream, 3 zero bytes, big-endian length).
func demuxStdout(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return out.Bytes(), nil
			}
			return out.Bytes(), err
		}
		if hdr[0] > 3 {
			return out.Bytes(), fmt.Errorf("stream %d in the exec output", hdr[0])
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		w := io.Discard
		if hdr[0] == 1 {
			w = &out
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			if errors.Is(err, io.EOF) {
				return out.Bytes(), nil
			}
			return out.Bytes(), err
		}
	}
}

func jsonHeader() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return h
}

// postJSON sends in as a JSON body and decodes the answer into out.
func (c *Client) postJSON(ctx context.Context, op, endpoint string, in, out any, path ...string) error {
	body, err := json.Marshal(in)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	resp, err := c.do(ctx, op, http.MethodPost, endpoint, bytes.NewReader(body), nil, jsonHeader(), path...)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return &Error{Op: op, Status: resp.StatusCode, Err: fmt.Errorf("decoding answer: %w", err)}
	}
	return nil
}

// serviceCommand runs args in the service's mount namespace with nothing
// in its environment but the service's PATH: podman runs the OCI runtime,
// and so CRIU, with only PATH and XDG_RUNTIME_DIR (measured), so a
// variable set on the service never reaches CRIU.
func (c *Client) serviceCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	pid, err := c.ServicePID()
	if err != nil {
		return nil, err
	}
	p := strconv.Itoa(pid)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if env, err := os.ReadFile("/proc/" + p + "/environ"); err == nil {
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				path = v
			}
		}
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", p, "-m", "--", "env", "-i", "PATH=" + path}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd, nil
}

// RuntimeVersion runs `RUNTIME --version` as the service would find it;
// ErrRemote when the service is not on this machine.
func (c *Client) RuntimeVersion(ctx context.Context, runtime string) (string, error) {
	cmd, err := c.serviceCommand(ctx, runtime, "--version")
	if err != nil {
		return "", err
	}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", runtime, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// CRIUReport is what CRIU says of itself on the service's host.
type CRIUReport struct {
	Version string `json:"version"`
	Path    string `json:"path,omitempty"`
	// FaultWrapper: Path is a script that sets CRIU_FAULT=130, which
	// makes CRIU < 4.2 stop its parasite without a hardware breakpoint.
	FaultWrapper bool `json:"faultWrapper,omitempty"`
	// Check is `criu check`'s findings, errors and warnings first.
	Check []string `json:"check"`
	// Breakpoints is "ok", "broken" (CRIU >= 4.2 found they never fire:
	// a VM guest) or "unknown" (CRIU < 4.2 cannot tell).
	Breakpoints string `json:"breakpoints"`
}

// CRIUCheck asks the CRIU the service would run for its version and runs
// `criu check` and `criu check --feature breakpoints`; ErrRemote when the
// service is not on this machine. `criu check` says "Looks good." on VM
// guests where every dump of CRIU < 4.2 hangs, so only a real checkpoint
// settles it.
func (c *Client) CRIUCheck(ctx context.Context) (*CRIUReport, error) {
	if _, err := c.ServicePID(); err != nil {
		return nil, err
	}
	run := func(args ...string) (string, error) {
		cmd, err := c.serviceCommand(ctx, args...)
		if err != nil {
			return "", err
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	r := &CRIUReport{}
	out, err := run("sh", "-c", "command -v criu")
	if err != nil {
		return nil, fmt.Errorf("finding criu on the service's PATH: %w", err)
	}
	r.Path = strings.TrimSpace(out)
	if pid, err := c.ServicePID(); err == nil {
		r.FaultWrapper = isFaultWrapper(fmt.Sprintf("/proc/%d/root%s", pid, r.Path))
	}
	out, _ = run("criu", "--version")
	r.Version = parseCRIUVersion(out)
	out, _ = run("criu", "check")
	r.Check = parseCRIUCheck(out)
	out, _ = run("criu", "check", "--feature", "breakpoints")
	r.Breakpoints = parseBreakpoints(out)
	return r, ctx.Err()
}

func parseCRIUVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseCRIUCheck keeps CRIU's errors, warnings and verdict, without the
// source locations: "Warn  (criu/cr-check.c:1230): X" becomes "warn: X".
func parseCRIUCheck(out string) []string {
	var errs, warns, verdict []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		msg := line
		if i := strings.Index(line, "): "); i >= 0 && strings.Contains(line[:i], "(") {
			msg = strings.TrimSpace(line[i+3:])
		}
		switch {
		case strings.Contains(line, "Hardware breakpoints"):
			// Breakpoints reports it.
		case strings.HasPrefix(line, "Error"):
			errs = append(errs, "error: "+msg)
		case strings.HasPrefix(line, "Warn"):
			warns = append(warns, "warn: "+msg)
		case strings.HasPrefix(line, "Looks good"):
			verdict = append(verdict, line)
		}
	}
	all := append(append(errs, warns...), verdict...)
	if len(all) > 6 {
		all = append(all[:5], fmt.Sprintf("and %d more", len(all)-5))
	}
	if len(all) == 0 && strings.TrimSpace(out) != "" {
		all = []string{firstLine(strings.TrimSpace(out))}
	}
	return all
}

func parseBreakpoints(out string) string {
	switch {
	case strings.Contains(out, "Hardware breakpoints don't seem to work"):
		return "broken"
	case strings.Contains(out, "Looks good"):
		return "ok"
	}
	return "unknown" // CRIU < 4.2: "unknown feature"
}

// isFaultWrapper reports whether path is a script that sets CRIU_FAULT=130.
func isFaultWrapper(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 8<<10)
	n, _ := io.ReadFull(f, b)
	b = b[:n]
	return bytes.HasPrefix(b, []byte("#!")) && bytes.Contains(b, []byte("CRIU_FAULT=130"))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
