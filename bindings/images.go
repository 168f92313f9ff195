package podman

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
)

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

// LoadImage loads an image archive (podman load) streamed from r and
// returns the names podman reports for it.
func (c *Client) LoadImage(ctx context.Context, r io.Reader) ([]string, error) {
	op := "loading an image"
	resp, err := c.doOnce(ctx, op, http.MethodPost, "/images/load", r, nil, http.Header{"Content-Type": {"application/x-tar"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rep struct{ Names []string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rep); err != nil {
		return nil, &Error{Op: op, Status: resp.StatusCode, Err: err}
	}
	return rep.Names, nil
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
