package podman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Pod is what podman-migrate needs of a pod's inspect data (podman 4 and
// 5 give the same fields).
type Pod struct {
	ID               string            `json:"Id"`
	Name             string            `json:"Name"`
	State            string            `json:"State"`
	Hostname         string            `json:"Hostname"`
	Labels           map[string]string `json:"Labels"`
	CgroupParent     string            `json:"CgroupParent"`
	InfraContainerID string            `json:"InfraContainerID"`
	SharedNamespaces []string          `json:"SharedNamespaces"`
	InfraConfig      *struct {
		PortBindings map[string][]struct {
			HostIP   string `json:"HostIp"`
			HostPort string `json:"HostPort"`
		} `json:"PortBindings"`
		HostNetwork        bool     `json:"HostNetwork"`
		NoManageResolvConf bool     `json:"NoManageResolvConf"`
		DNSServer          []string `json:"DNSServer"`
		DNSSearch          []string `json:"DNSSearch"`
		DNSOption          []string `json:"DNSOption"`
		NoManageHosts      bool     `json:"NoManageHosts"`
		HostAdd            []string `json:"HostAdd"`
		Networks           []string `json:"Networks"`
	} `json:"InfraConfig"`
	Containers []struct {
		ID    string `json:"Id"`
		Name  string `json:"Name"`
		State string `json:"State"`
	} `json:"Containers"`
	CPUPeriod   uint64 `json:"cpu_period"`
	CPUQuota    int64  `json:"cpu_quota"`
	CPUSetCPUs  string `json:"cpuset_cpus"`
	MemoryLimit uint64 `json:"memory_limit"`
}

// InspectPod returns a pod's inspect data; the error wraps ErrNotFound
// when there is no such pod.
func (c *Client) InspectPod(ctx context.Context, nameOrID string) (*Pod, error) {
	var p Pod
	op := fmt.Sprintf("inspecting pod %q", nameOrID)
	if err := c.doJSON(ctx, op, http.MethodGet, "/pods/%s/json", nil, &p, nameOrID); err != nil {
		return nil, err
	}
	return &p, nil
}

// PodExists reports whether a pod of that name or ID exists.
func (c *Client) PodExists(ctx context.Context, nameOrID string) (bool, error) {
	_, err := c.InspectPod(ctx, nameOrID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PodSpec is the part of podman's pod spec generator (POST
// /libpod/pods/create) a restored pod needs.
type PodSpec struct {
	Name               string            `json:"name"`
	Hostname           string            `json:"hostname,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	InfraName          string            `json:"infra_name,omitempty"`
	SharedNamespaces   []string          `json:"shared_namespaces,omitempty"`
	PortMappings       []PortMapping     `json:"portmappings,omitempty"`
	NetNS              *Namespace        `json:"netns,omitempty"`
	Networks           map[string]any    `json:"Networks,omitempty"`
	DNSServer          []string          `json:"dns_server,omitempty"`
	DNSSearch          []string          `json:"dns_search,omitempty"`
	DNSOption          []string          `json:"dns_option,omitempty"`
	NoManageResolvConf bool              `json:"no_manage_resolv_conf,omitempty"`
	NoManageHosts      bool              `json:"no_manage_hosts,omitempty"`
	HostAdd            []string          `json:"hostadd,omitempty"`
	CgroupParent       string            `json:"cgroup_parent,omitempty"`
	CPUPeriod          uint64            `json:"cpu_period,omitempty"`
	CPUQuota           int64             `json:"cpu_quota,omitempty"`
	ResourceLimits     map[string]any    `json:"resource_limits,omitempty"`
}

// PortMapping is one published port (podman's types.PortMapping).
type PortMapping struct {
	HostIP        string `json:"host_ip,omitempty"`
	ContainerPort uint16 `json:"container_port"`
	HostPort      uint16 `json:"host_port"`
	Protocol      string `json:"protocol,omitempty"`
}

// Namespace is podman's specgen.Namespace.
type Namespace struct {
	NSMode string `json:"nsmode"`
	Value  string `json:"value,omitempty"`
}

// CreatePod creates a pod (with its infra container, not started) and
// returns its ID.
func (c *Client) CreatePod(ctx context.Context, spec PodSpec) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.postJSON(ctx, fmt.Sprintf("creating pod %q", spec.Name), "/pods/create", spec, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// StartPod starts a pod's infra container and any member not running.
func (c *Client) StartPod(ctx context.Context, nameOrID string) error {
	return c.doJSON(ctx, fmt.Sprintf("starting pod %q", nameOrID), http.MethodPost, "/pods/%s/start", nil, nil, nameOrID)
}

// RemovePod removes a pod and, forced, its containers.
func (c *Client) RemovePod(ctx context.Context, nameOrID string) error {
	q := url.Values{}
	q.Set("force", "true")
	return c.doJSON(ctx, fmt.Sprintf("removing pod %q", nameOrID), http.MethodDelete, "/pods/%s", q, nil, nameOrID)
}
