package ckpt

import (
	"encoding/json"
	"sort"
)

// NetStatus is network.status, podman 4 and 5's record of the networks the
// container was attached to, by network name. Networks can be renamed;
// what each records is kept byte for byte, since podman reads more of it
// than this view does.
type NetStatus struct {
	raw map[string]json.RawMessage
}

// ParseNetStatus parses network.status. Absent (nil) or null, it is nil:
// the container recorded no networks. Something other than a JSON object
// is an error, and nil too.
func ParseNetStatus(b []byte) (*NetStatus, error) {
	if b == nil {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, nil
	}
	return &NetStatus{raw: raw}, nil
}

// NetAttachment is what network.status records of one network (podman's
// types.StatusBlock), as far as this code reads it.
type NetAttachment struct {
	Interfaces map[string]NetInterface `json:"interfaces"`
}

// NetInterface is one interface of a network attachment.
type NetInterface struct {
	Subnets []NetSubnet `json:"subnets"`
	MAC     string      `json:"mac_address"`
}

// NetSubnet is one address of an interface.
type NetSubnet struct {
	IPNet   string `json:"ipnet"`
	Gateway string `json:"gateway"`
}

// Names lists the networks, sorted; none for a nil NetStatus.
func (s *NetStatus) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.raw))
	for n := range s.raw {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Network returns what is recorded of one network; fields of the wrong
// type read as empty.
func (s *NetStatus) Network(name string) (NetAttachment, bool) {
	var a NetAttachment
	if s == nil {
		return a, false
	}
	raw, ok := s.raw[name]
	if ok {
		_ = json.Unmarshal(raw, &a)
	}
	return a, ok
}

// Rename records network old under the name nw, as it was; it reports
// whether there was such a network.
func (s *NetStatus) Rename(old, nw string) bool {
	if s == nil {
		return false
	}
	v, ok := s.raw[old]
	if ok {
		delete(s.raw, old)
		s.raw[nw] = v
	}
	return ok
}

// Bytes returns network.status as JSON: networks in name order, compact.
func (s *NetStatus) Bytes() ([]byte, error) { return json.Marshal(s.raw) }

// Addresses returns the addresses of the attachment's interfaces as
// recorded (CIDR: "10.88.0.5/16"), interfaces in name order, and the MAC
// address of the last interface (podman gives a container one per
// network).
func (a NetAttachment) Addresses() (cidrs []string, mac string) {
	names := make([]string, 0, len(a.Interfaces))
	for n := range a.Interfaces {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ifc := a.Interfaces[n]
		for _, s := range ifc.Subnets {
			cidrs = append(cidrs, s.IPNet)
		}
		mac = ifc.MAC
	}
	return cidrs, mac
}
