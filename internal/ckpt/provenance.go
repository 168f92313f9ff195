package ckpt

import (
	"encoding/json"
)

// Provenance is what a checkpoint image's manifest annotations record of
// the container, the host it was checkpointed on and how: push writes it
// with ToAnnotations, and everything that reads those annotations reads
// them with ProvenanceFromAnnotations, so both agree on the keys and
// their encoding. Podman's own images carry podman's keys only, CRI-O's
// CRI-O's; what an image does not record is empty.
type Provenance struct {
	// The container, as config.dump names it.
	Name, RawImageName, RootfsImageID, RootfsImageName string
	// The source host.
	PodmanVersion, CRIUVersion                 string
	RuntimeName, RuntimeVersion, ConmonVersion string
	HostArch, HostKernel, CgroupVersion        string
	DistributionName, DistributionVersion      string
	// The base image: its name and repository digest, and the copy
	// push --include-base made (a digest reference).
	BaseName, BaseDigest, BaseIncluded string
	// Format is FormatVersion on podman-migrate's images, "" on others.
	Format, ToolVersion string
	// SourceID is the container's ID on the source host.
	SourceID string
	// Created is when the checkpoint was taken, RFC 3339.
	Created string
	// CRIOName makes CRI-O restore the image as a checkpoint; CRIOVersion
	// and CRIOCRIUVersion are what CRI-O records of its own checkpoints.
	CRIOName, CRIOVersion, CRIOCRIUVersion string
	// BindKinds records what each bind mount's source was.
	BindKinds BindKinds
	// Options are the CRIU options of the checkpoint; nil when the image
	// does not record them (podman's).
	Options *Options
}

// provenanceKeys ties each string field to its annotation key.
func (p *Provenance) provenanceKeys() map[string]*string {
	return map[string]*string{
		AnnName:             &p.Name,
		AnnRawImageName:     &p.RawImageName,
		AnnRootfsImageID:    &p.RootfsImageID,
		AnnRootfsImageName:  &p.RootfsImageName,
		AnnPodmanVersion:    &p.PodmanVersion,
		AnnCriuVersion:      &p.CRIUVersion,
		AnnRuntimeName:      &p.RuntimeName,
		AnnRuntimeVersion:   &p.RuntimeVersion,
		AnnConmonVersion:    &p.ConmonVersion,
		AnnHostArch:         &p.HostArch,
		AnnHostKernel:       &p.HostKernel,
		AnnCgroupVersion:    &p.CgroupVersion,
		AnnDistributionName: &p.DistributionName,
		AnnDistributionVer:  &p.DistributionVersion,
		AnnBaseName:         &p.BaseName,
		AnnBaseDigest:       &p.BaseDigest,
		AnnBaseIncluded:     &p.BaseIncluded,
		AnnFormat:           &p.Format,
		AnnToolVersion:      &p.ToolVersion,
		AnnSourceID:         &p.SourceID,
		AnnCreated:          &p.Created,
		AnnCRIOName:         &p.CRIOName,
		AnnCRIOVersion:      &p.CRIOVersion,
		AnnCRIOCriuVersion:  &p.CRIOCRIUVersion,
	}
}

// ToAnnotations returns the manifest annotations that record p. Empty
// values are left out: an annotation is there only when it says
// something.
func (p Provenance) ToAnnotations() map[string]string {
	a := map[string]string{}
	for k, v := range p.provenanceKeys() {
		if *v != "" {
			a[k] = *v
		}
	}
	if s := p.BindKinds.Annotation(); s != "" {
		a[AnnBindKinds] = s
	}
	if p.Options != nil {
		for k, v := range p.Options.ToAnnotations() {
			a[k] = v
		}
	}
	return a
}

// ProvenanceFromAnnotations reads provenance from manifest annotations.
// It does not fail: a bind-kinds annotation that does not parse records
// no kinds, and options are read only when they are valid (Open refuses
// an image whose options are not).
func ProvenanceFromAnnotations(a map[string]string) Provenance {
	var p Provenance
	for k, v := range p.provenanceKeys() {
		*v = a[k]
	}
	p.BindKinds, _ = ParseBindKinds(a[AnnBindKinds])
	if _, ok := a[AnnTCPEstablished]; ok {
		if o, err := OptionsFromAnnotations(a); err == nil {
			p.Options = &o
		}
	}
	return p
}

// Provenance reads the provenance the image's manifest records.
func (m *Metadata) Provenance() Provenance {
	return ProvenanceFromAnnotations(m.Manifest.Annotations)
}

// BindKind is what a bind mount's source was on the source host: CRIU
// restores a bind mount only onto the same kind.
type BindKind string

// The kinds of bind mount source.
const (
	BindDir  BindKind = "dir"
	BindFile BindKind = "file"
)

// BindKinds are the kinds of the bind mounts' sources, by destination
// (annotation AnnBindKinds).
type BindKinds map[string]BindKind

// Annotation encodes k as AnnBindKinds' value, JSON; "" when k is empty.
func (k BindKinds) Annotation() string {
	if len(k) == 0 {
		return ""
	}
	b, _ := json.Marshal(k)
	return string(b)
}

// ParseBindKinds decodes AnnBindKinds' value; "" is no kinds. A value that
// does not parse gives no kinds and an error.
func ParseBindKinds(s string) (BindKinds, error) {
	if s == "" {
		return nil, nil
	}
	var k BindKinds
	if err := json.Unmarshal([]byte(s), &k); err != nil {
		return nil, err
	}
	return k, nil
}

// Dir says whether the bind mount at dest had a directory as its source;
// known is false when k does not record it (or records a kind this code
// does not know).
func (k BindKinds) Dir(dest string) (dir, known bool) {
	switch k[dest] {
	case BindDir:
		return true, true
	case BindFile:
		return false, true
	}
	return false, false
}
