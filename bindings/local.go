package podman

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrRemote is wrapped when a question about the service's host can only be
// answered for a service on this machine.
var ErrRemote = errors.New("the podman service is not on this machine")

// ServicePID returns the PID of the process that serves a unix socket on
// this machine (SO_PEERCRED), so that paths can be looked up in the
// service's own mount namespace (/proc/PID/root): a bind-mount source must
// exist where podman, not podman-migrate, looks for it.
func (c *Client) ServicePID() (int, error) {
	cred, err := c.peer()
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}

// ServiceRoot returns /proc/PID/root of the service on this machine.
func (c *Client) ServiceRoot() (string, error) {
	pid, err := c.ServicePID()
	if err != nil {
		return "", err
	}
	return "/proc/" + strconv.Itoa(pid) + "/root", nil
}

// peer returns the credentials of the process serving a unix socket on
// this machine.
func (c *Client) peer() (*unix.Ucred, error) {
	path, ok := strings.CutPrefix(c.URI, "unix://")
	if !ok {
		return nil, ErrRemote
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	return cred, nil
}

// CRIUVersion returns the version of the CRIU the service would run (the
// podman API does not report it), found in the service's mount namespace
// and PATH; "" when the service is not on this machine or it cannot tell.
func (c *Client) CRIUVersion(ctx context.Context) string {
	cmd, err := c.serviceCommand(ctx, "criu", "--version")
	if err != nil {
		return ""
	}
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
