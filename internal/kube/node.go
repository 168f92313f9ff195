package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
	"time"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrNodeNotReady is wrapped when the node's runtime cannot restore a
// checkpoint from kube's manifest (exit 3, a runtime's failure).
var ErrNodeNotReady = fault.New(fault.Podman, "the node cannot restore checkpoints")

// ErrCrictl is wrapped when crictl cannot be run or its answer read.
var ErrCrictl = fault.New(fault.Podman, "asking the node's runtime with crictl failed")

// NodeOptions say how the node's container runtime is reached: through
// crictl, as an operator on the node would.
type NodeOptions struct {
	// Crictl is the crictl binary; "" finds it on PATH.
	Crictl string
	// Endpoint is crictl's --runtime-endpoint; "" leaves it to crictl's
	// own configuration (/etc/crictl.yaml, CONTAINER_RUNTIME_ENDPOINT).
	Endpoint string
	// Timeout bounds each crictl call; 0 means 30 s.
	Timeout time.Duration
}

// NodeReport is what --check-node found, and its --format json document.
type NodeReport struct {
	OK             bool   `json:"ok"`
	Runtime        string `json:"runtime"`
	RuntimeVersion string `json:"runtimeVersion"`
	// CheckpointRestore is CRI-O's effective enable_criu_support: CRI-O
	// turns it off at start when it finds no criu binary on its PATH.
	CheckpointRestore bool   `json:"checkpointRestore"`
	DefaultRuntime    string `json:"defaultRuntime,omitempty"`
	// Problems say what stops a restore, each with the setting that
	// fixes it; Notes what the node needs beyond what CRI reports.
	Problems []string `json:"problems,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// EnableCRIU is the CRI-O setting a restore needs.
const EnableCRIU = "enable_criu_support = true under [crio.runtime] (for example in /etc/crio/crio.conf.d/10-criu.conf), with criu on CRI-O's PATH, then restart CRI-O"

// CheckNode asks the node's runtime, with `crictl version` and `crictl info`,
// whether it can restore kube's manifest: CRI-O with checkpoint/restore on.
func CheckNode(ctx context.Context, o NodeOptions) (*NodeReport, error) {
	ver, err := crictl(ctx, o, "version")
	if err != nil {
		return nil, err
	}
	rep := &NodeReport{}
	sc := bufio.NewScanner(bytes.NewReader(ver))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "RuntimeName":
			rep.Runtime = strings.TrimSpace(v)
		case "RuntimeVersion":
			rep.RuntimeVersion = strings.TrimSpace(v)
		}
	}
	if rep.Runtime == "" {
		return nil, fmt.Errorf("%w: `crictl version` named no runtime: %q", ErrCrictl, firstLine(ver))
	}
	info, err := crictl(ctx, o, "info", "-o", "json")
	if err != nil {
		return nil, err
	}
	if err := rep.read(info); err != nil {
		return nil, err
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// read fills the report from `crictl info -o json`: CRI-O puts its runtime
// configuration under config.crio (server/runtime_status.go).
func (rep *NodeReport) read(info []byte) error {
	var doc struct {
		Config struct {
			CRIO *struct {
				EnableCriuSupport bool
				DefaultRuntime    string
				Runtimes          map[string]struct {
					RuntimePath string
				}
			} `json:"crio"`
		} `json:"config"`
	}
	if err := json.Unmarshal(info, &doc); err != nil {
		return fmt.Errorf("%w: reading `crictl info`: %w", ErrCrictl, err)
	}
	switch {
	case rep.Runtime == "cri-o" && doc.Config.CRIO != nil:
		c := doc.Config.CRIO
		rep.CheckpointRestore = c.EnableCriuSupport
		rep.DefaultRuntime = c.DefaultRuntime
		if !c.EnableCriuSupport {
			rep.Problems = append(rep.Problems, "CRI-O's checkpoint/restore support is off: set "+EnableCRIU)
		}
		if rt, ok := c.Runtimes[c.DefaultRuntime]; ok && rt.RuntimePath != "" {
			rep.DefaultRuntime += " (" + rt.RuntimePath + ")"
		}
		rep.Notes = append(rep.Notes,
			"The default runtime must restore with CRIU (runc or crun).",
			"The kubelet must have image volumes (Kubernetes 1.31 or later, feature gate ImageVolume, on by default from 1.35) for kube's default --base-pull=image-volume.",
			"Kubernetes' own pod checkpoint/restore (KEP-5823, alpha from 1.37) restores on the same node only; kube's manifest restores one container on any CRI-O node.")
	case rep.Runtime == "cri-o":
		rep.Problems = append(rep.Problems, "CRI-O did not report its configuration in `crictl info`; set "+EnableCRIU)
	case rep.Runtime == "containerd":
		rep.Problems = append(rep.Problems, "containerd: kube's manifest is made and tested for CRI-O; containerd 2.4 removes restore through CreateContainer, so use a CRI-O node")
	default:
		rep.Problems = append(rep.Problems, fmt.Sprintf("runtime %q: kube's manifest is made and tested for CRI-O", rep.Runtime))
	}
	return nil
}

// crictl runs crictl with args under the timeout and returns its stdout.
func crictl(ctx context.Context, o NodeOptions, args ...string) ([]byte, error) {
	bin := o.Crictl
	if bin == "" {
		bin = "crictl"
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	// Past crictl's own bound, so that crictl says what it waited for.
	bound := timeout + min(timeout, 5*time.Second)
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	global := []string{"--timeout", timeout.String()}
	if o.Endpoint != "" {
		global = append(global, "--runtime-endpoint", o.Endpoint)
	}
	args = append(global, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fault.Hinted(fmt.Errorf("%w: `crictl %s` did not answer within %s", ErrCrictl, strings.Join(args, " "), bound), "is the runtime running, and is --runtime-endpoint its socket?")
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return nil, fault.Hinted(fmt.Errorf("%w: %w", ErrCrictl, err), "install crictl (cri-tools) on the node, or give its path with --crictl")
	case err != nil:
		return nil, fault.Hinted(fmt.Errorf("%w: `crictl %s`: %w: %s", ErrCrictl, strings.Join(args, " "), err, firstLine(stderr.Bytes())), "is the runtime running, and is --runtime-endpoint its socket?")
	}
	return stdout.Bytes(), nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// Text is the report as check-node prints it.
func (rep *NodeReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "runtime: %s %s\n", rep.Runtime, rep.RuntimeVersion)
	if rep.Runtime == "cri-o" {
		fmt.Fprintf(&b, "checkpoint/restore (enable_criu_support): %t\n", rep.CheckpointRestore)
		if rep.DefaultRuntime != "" {
			fmt.Fprintf(&b, "default runtime: %s\n", rep.DefaultRuntime)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if rep.OK {
		b.WriteString("ok: this node can restore the Pods podman-migrate kube prints\n")
	} else {
		b.WriteString("FAIL: this node cannot restore the Pods podman-migrate kube prints\n")
	}
	return b.String()
}
