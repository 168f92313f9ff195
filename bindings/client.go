// Package podman is podman-migrate's client of podman's REST socket. It uses
// podman's Go bindings for the connection and talks to the libpod endpoints
// through Connection.DoRequest, because the bindings' checkpoint and restore
// helpers only take file paths and the archives here are streams.
package podman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containers/podman/v4/pkg/bindings"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// APIVersion is the libpod API version requested: the oldest server this
// tool supports (podman 4.0) understands it, and newer ones honour it.
const APIVersion = "4.0.0"

// ErrNotFound is wrapped when podman answers 404 (no such container, image
// or volume).
var ErrNotFound = errors.New("not found")

// Error is a failure reported by, or in reaching, the podman service.
type Error struct {
	Op     string // what was asked, e.g. "checkpointing container \"web\""
	Status int    // HTTP status, 0 when podman was not reached
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("podman: %s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Kind is fault.Podman: a failure of podman, its runtime or CRIU (exit 3),
// unless what it wraps is of a higher kind.
func (e *Error) Kind() fault.Kind { return fault.Podman }

// serviceHint is the fix when the podman service was not reached.
const serviceHint = "start the service with `podman system service --time=0` or point --url at its socket"

// Hint is the fix: the cause's own (CRIU stuck), else, when podman was not
// reached, how to start the service. A cause of this machine's (no space,
// no permission to the socket) is left to the CLI's hint for it.
func (e *Error) Hint() string {
	if h := fault.HintOf(e.Err); h != "" {
		return h
	}
	if e.Status != 0 || errors.Is(e.Err, syscall.ENOSPC) || errors.Is(e.Err, os.ErrPermission) {
		return ""
	}
	return serviceHint
}

// Client talks to one podman service.
type Client struct {
	URI  string
	ctx  context.Context // carries the bindings connection
	conn *bindings.Connection

	infoMu sync.Mutex
	info   *Info // the first answer of Info
}

// DefaultURI is the socket used when neither --url nor CONTAINER_HOST is
// set: podman's rootful socket, or the rootless one for other users.
func DefaultURI() string {
	if v := os.Getenv("CONTAINER_HOST"); v != "" {
		return v
	}
	if os.Geteuid() != 0 {
		dir := os.Getenv("XDG_RUNTIME_DIR")
		if dir == "" {
			dir = fmt.Sprintf("/run/user/%d", os.Geteuid())
		}
		return "unix://" + filepath.Join(dir, "podman", "podman.sock")
	}
	return "unix:///run/podman/podman.sock"
}

// ConnectTo opens a connection to the podman service d names (URI ""
// means DefaultURI; Identity is the ssh key for ssh:// URIs) and checks
// that it answers.
func ConnectTo(ctx context.Context, d Destination) (*Client, error) {
	uri := d.URI
	if uri == "" {
		uri = DefaultURI()
	}
	var bctx context.Context
	var err error
	if d.Identity != "" {
		bctx, err = bindings.NewConnectionWithIdentity(ctx, uri, d.Identity, false)
	} else {
		bctx, err = bindings.NewConnection(ctx, uri)
	}
	if err != nil {
		return nil, &Error{Op: fmt.Sprintf("connecting to %s", uri), Err: fmt.Errorf("%w (is `podman system service` running there?)", err)}
	}
	conn, err := bindings.GetClient(bctx)
	if err != nil {
		return nil, &Error{Op: fmt.Sprintf("connecting to %s", uri), Err: err}
	}
	return &Client{URI: uri, ctx: bctx, conn: conn}, nil
}

// ErrRootless is wrapped when the service is a rootless podman: CRIU needs
// a rootful one to checkpoint and restore.
var ErrRootless = errors.New("the podman service is rootless; checkpoint and restore need a rootful podman (CRIU)")

// RequireRootful refuses a rootless service early, before anything is
// checkpointed.
func (c *Client) RequireRootful(ctx context.Context) error {
	rootless := false
	if cred, err := c.peer(); err == nil {
		// A service on this machine: its user says it, without podman
		// info (a tenth of a second); root's socket is served as root.
		rootless = cred.Uid != 0
	} else {
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		rootless = info.Host.Security.Rootless
	}
	if rootless {
		return &Error{Op: fmt.Sprintf("checking %s", c.URI), Err: fmt.Errorf("%w: use the rootful socket, e.g. sudo podman-migrate --url unix:///run/podman/podman.sock", ErrRootless)}
	}
	return nil
}

// PrefetchInfo starts asking for Info in the background, so that the
// answer is ready, or on its way, when a command needs it.
func (c *Client) PrefetchInfo(ctx context.Context) {
	go func() { _, _ = c.Info(ctx) }()
}

// do sends one request. On a non-2xx answer it reads podman's error body and
// returns an *Error; otherwise the caller owns the response body.
func (c *Client) do(ctx context.Context, op, method, endpoint string, body io.Reader, query url.Values, header http.Header, path ...string) (*http.Response, error) {
	if header == nil {
		header = http.Header{}
	}
	header.Set("API-Version", APIVersion)
	resp, err := c.conn.DoRequest(ctx, body, method, endpoint, query, header, path...)
	if err != nil {
		if resp != nil && resp.Response != nil {
			resp.Body.Close()
		}
		return nil, &Error{Op: op, Err: err}
	}
	if resp.IsSuccess() {
		return resp.Response, nil
	}
	defer resp.Body.Close()
	return nil, responseError(op, resp.Response)
}

// doOnce sends a request whose body is a stream exactly once. The
// bindings' DoRequest tries Do three times with the same body, which after
// a partial send would hand podman a truncated archive.
func (c *Client) doOnce(ctx context.Context, op, method, endpoint string, body io.Reader, query url.Values, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://d/v"+APIVersion+"/libpod"+endpoint, body)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	req.URL.RawQuery = query.Encode()
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.conn.Client.Do(req)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, responseError(op, resp)
}

func responseError(op string, resp *http.Response) error {
	var model struct {
		Cause   string `json:"cause"`
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &model) == nil && model.Message != "" {
		msg = model.Message
	}
	if msg == "" {
		msg = resp.Status
	}
	err := errors.New(msg)
	if resp.StatusCode == http.StatusNotFound {
		err = fmt.Errorf("%s: %w", msg, ErrNotFound)
	}
	return &Error{Op: op, Status: resp.StatusCode, Err: err}
}

// doJSON sends a request and decodes a JSON answer into out (if non-nil).
func (c *Client) doJSON(ctx context.Context, op, method, endpoint string, query url.Values, out any, path ...string) error {
	resp, err := c.do(ctx, op, method, endpoint, nil, query, nil, path...)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return &Error{Op: op, Status: resp.StatusCode, Err: fmt.Errorf("decoding answer: %w", err)}
	}
	return nil
}
