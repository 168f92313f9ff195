package ckpt

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Spec is spec.dump, the container's OCI runtime spec, as a view that
// reads and edits the fields this code knows and keeps every other one
// byte for byte: the edited spec.dump goes back to a podman (or CRI-O)
// that may know more fields than this code does.
type Spec struct {
	raw map[string]json.RawMessage
}

// ParseSpec parses spec.dump, which must be a JSON object. The error is
// json's, for callers to wrap in their own.
func ParseSpec(b []byte) (*Spec, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, errors.New("not a JSON object")
	}
	return &Spec{raw: raw}, nil
}

// Bytes returns the spec as JSON: its fields in key order, compact.
func (s *Spec) Bytes() ([]byte, error) { return json.Marshal(s.raw) }

// Annotations returns the spec's annotations (nil when it has none). A
// value of the wrong type is an error; what could be read is returned
// with it, for readers that take what they can.
func (s *Spec) Annotations() (map[string]string, error) {
	raw, ok := s.raw["annotations"]
	if !ok {
		return nil, nil
	}
	var a map[string]string
	err := json.Unmarshal(raw, &a)
	return a, err
}

// SetAnnotations replaces the spec's annotations.
func (s *Spec) SetAnnotations(a map[string]string) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	s.raw["annotations"] = b
	return nil
}

// Args returns the process's arguments, nil when it records none.
func (s *Spec) Args() []string {
	var p struct {
		Args []string `json:"args"`
	}
	_ = json.Unmarshal(s.raw["process"], &p)
	return p.Args
}

// DropNamespacePaths removes the path of every namespace the spec joins
// by path, so the runtime creates it afresh, and returns how many it
// removed.
func (s *Spec) DropNamespacePaths() (int, error) {
	var linux map[string]json.RawMessage
	if err := json.Unmarshal(s.raw["linux"], &linux); err != nil || linux == nil {
		return 0, nil
	}
	var nss []map[string]json.RawMessage
	if err := json.Unmarshal(linux["namespaces"], &nss); err != nil {
		return 0, nil
	}
	dropped := 0
	for _, ns := range nss {
		if _, ok := ns["path"]; ok {
			delete(ns, "path")
			dropped++
		}
	}
	if dropped == 0 {
		return 0, nil
	}
	var err error
	if linux["namespaces"], err = json.Marshal(nss); err != nil {
		return 0, err
	}
	if s.raw["linux"], err = json.Marshal(linux); err != nil {
		return 0, err
	}
	return dropped, nil
}

// SetNamespacePath makes the spec join the namespace of type typ
// ("network", ...) at path; it fails when the spec has no such namespace.
func (s *Spec) SetNamespacePath(typ, path string) error {
	var linux map[string]json.RawMessage
	if err := json.Unmarshal(s.raw["linux"], &linux); err != nil || linux == nil {
		return fmt.Errorf("the spec has no linux section")
	}
	var nss []map[string]json.RawMessage
	if err := json.Unmarshal(linux["namespaces"], &nss); err != nil {
		return fmt.Errorf("the spec's namespaces: %w", err)
	}
	t, _ := json.Marshal(typ)
	p, _ := json.Marshal(path)
	found := false
	for _, ns := range nss {
		if string(ns["type"]) == string(t) {
			ns["path"], found = p, true
		}
	}
	if !found {
		return fmt.Errorf("the spec has no %s namespace", typ)
	}
	var err error
	if linux["namespaces"], err = json.Marshal(nss); err != nil {
		return err
	}
	s.raw["linux"], err = json.Marshal(linux)
	return err
}

// SpecMount is a mount as spec.dump, the container's OCI runtime spec,
// records it. One read from a Spec keeps the mount's JSON object, so that
// SetMounts writes back the fields it does not show.
type SpecMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options"`

	raw map[string]json.RawMessage
}

// ReadOnly reports whether the mount has the "ro" option.
func (m SpecMount) ReadOnly() bool { return slices.Contains(m.Options, "ro") }

// SetSource changes where the mount comes from.
func (m *SpecMount) SetSource(src string) {
	m.Source = src
	if m.raw != nil {
		b, _ := json.Marshal(src)
		m.raw["source"] = b
	}
}

// Mounts returns the spec's mounts in order: nil when it has no "mounts"
// (or null), empty when the list is. Fields of the wrong type read as
// empty. An entry that is not a JSON object is an error: it could not be
// written back; it reads as an empty mount, returned with the error for
// readers that take what they can.
func (s *Spec) Mounts() ([]SpecMount, error) {
	raw, ok := s.raw["mounts"]
	if !ok {
		return nil, nil
	}
	var objs []map[string]json.RawMessage
	err := json.Unmarshal(raw, &objs)
	if objs == nil {
		return nil, err
	}
	out := make([]SpecMount, len(objs))
	for i, o := range objs {
		if o == nil && err == nil {
			err = fmt.Errorf("mount %d is not an object", i)
		}
		m := SpecMount{raw: o}
		_ = json.Unmarshal(o["destination"], &m.Destination)
		_ = json.Unmarshal(o["type"], &m.Type)
		_ = json.Unmarshal(o["source"], &m.Source)
		_ = json.Unmarshal(o["options"], &m.Options)
		out[i] = m
	}
	return out, err
}

// SetMounts replaces the spec's mounts. A mount read by Mounts is written
// back as it was read but for its edits; nil leaves a spec without
// mounts without them.
func (s *Spec) SetMounts(ms []SpecMount) error {
	if ms == nil {
		if _, had := s.raw["mounts"]; had {
			s.raw["mounts"] = json.RawMessage("null")
		}
		return nil
	}
	out := make([]any, len(ms))
	for i, m := range ms {
		if m.raw != nil {
			out[i] = m.raw
		} else {
			out[i] = m
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	s.raw["mounts"] = b
	return nil
}

// UserBind reports whether m is a bind mount the user gave the container:
// not one podman makes itself (PodmanManaged), nor a named volume's
// (volumeAt holds the volumes' names by destination, as the caller
// compares destinations).
func (m SpecMount) UserBind(volumeAt map[string]string) bool {
	return m.Type == "bind" && volumeAt[m.Destination] == "" && !PodmanManaged(m.Destination, m.Source)
}

// UserBinds returns the mounts for which UserBind holds, in order.
func UserBinds(mounts []SpecMount, volumeAt map[string]string) []SpecMount {
	var out []SpecMount
	for _, m := range mounts {
		if m.UserBind(volumeAt) {
			out = append(out, m)
		}
	}
	return out
}

// PodmanManaged reports whether a mount is one podman makes for every
// container (and remakes on the target): /etc/hosts, resolv.conf,
// hostname, .containerenv, secrets, /dev/shm, or anything from the
// container's own userdata directory
// (…/DRIVER-containers/ID/userdata/…); a user's own directory that
// happens to be called userdata is not.
func PodmanManaged(dest, source string) bool {
	switch dest {
	case "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv", "/run/secrets", "/dev/shm":
		return true
	}
	return userdataPath.MatchString(source)
}

var userdataPath = regexp.MustCompile(`/[a-z0-9]+-containers/[0-9a-f]{64}/userdata(/|$)`)

// RuntimeSpec decodes spec.dump into the runtime-spec types, as podman
// does when it imports a checkpoint: a field of the wrong type is an
// error, and the rest is decoded regardless, so a check sees all that
// podman could act on.
func RuntimeSpec(specDump []byte) (*specs.Spec, error) {
	var s specs.Spec
	err := json.Unmarshal(specDump, &s)
	return &s, err
}
