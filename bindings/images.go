package podman

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
)

// PullImage has the podman service pull ref (normally NAME@DIGEST) and
// returns the image's ID. tlsVerify is passed on when not nil.
func (c *Client) PullImage(ctx context.Context, ref string, tlsVerify *bool) (string, error) {
	q := url.Values{}
	q.Set("reference", ref)
	q.Set("quiet", "true")
	if tlsVerify != nil {
		q.Set("tlsVerify", strconv.FormatBool(*tlsVerify))
	}
	op := fmt.Sprintf("pulling image %q", ref)
	resp, err := c.do(ctx, op, http.MethodPost, "/images/pull", nil, q, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	// A stream of JSON reports; a failure arrives as one with "error" set,
	// under HTTP 200.
	var id string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r struct {
			Error string   `json:"error"`
			ID    string   `json:"id"`
			IDs   []string `json:"images"`
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r.Error != "" {
			return "", &Error{Op: op, Status: resp.StatusCode, Err: errors.New(r.Error)}
		}
		if r.ID != "" {
			id = r.ID
		}
	}
	if err := sc.Err(); err != nil {
		return "", &Error{Op: op, Err: err}
	}
	if id == "" {
		return "", &Error{Op: op, Err: errors.New("podman reported no image ID")}
	}
	return id, nil
}

// TagImage adds the name repo:tag to an image.
func (c *Client) TagImage(ctx context.Context, nameOrID, repo, tag string) error {
	q := url.Values{}
	q.Set("repo", repo)
	q.Set("tag", tag)
	op := fmt.Sprintf("tagging image %s as %s:%s", ckpt.ShortID(nameOrID), repo, tag)
	return c.doJSON(ctx, op, http.MethodPost, "/images/%s/tag", q, nil, nameOrID)
}

// SaveImage streams an image as an OCI archive (podman image save
// --format oci-archive).
func (c *Client) SaveImage(ctx context.Context, nameOrID string) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("format", "oci-archive")
	op := fmt.Sprintf("saving image %q", nameOrID)
	resp, err := c.do(ctx, op, http.MethodGet, "/images/%s/get", nil, q, nil, nameOrID)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// RemoveImage removes an image (used to undo a base image pull).
func (c *Client) RemoveImage(ctx context.Context, nameOrID string) error {
	return c.doJSON(ctx, fmt.Sprintf("removing image %q", nameOrID), http.MethodDelete, "/images/%s", nil, nil, nameOrID)
}

// Network is what podman-migrate needs of a network's inspect data.
type Network struct {
	Name    string `json:"name"`
	Driver  string `json:"driver"`
	Subnets []struct {
		Subnet  string `json:"subnet"`
		Gateway string `json:"gateway"`
	} `json:"subnets"`
}

// InspectNetwork returns a network's inspect data; the error wraps
// ErrNotFound when there is no such network.
func (c *Client) InspectNetwork(ctx context.Context, name string) (*Network, error) {
	var n Network
	op := fmt.Sprintf("inspecting network %q", name)
	if err := c.doJSON(ctx, op, http.MethodGet, "/networks/%s/json", nil, &n, name); err != nil {
		return nil, err
	}
	return &n, nil
}
