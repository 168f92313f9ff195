package restore

import (
	"fmt"
	"io"
)

// LogRelocation tells w what the plan changed in the checkpoint.
func (p *Plan) LogRelocation(w io.Writer) {
	rel := p.relocated
	if rel == nil {
		return
	}
	if len(rel.cleared) > 0 {
		fmt.Fprintf(w, "Removed source-host paths from config.dump: %v\n", rel.cleared)
	}
	for _, ch := range rel.changes {
		fmt.Fprintf(w, "Relocated %s\n", ch)
	}
}

// CreatedVolumes are the named volumes the restore creates: a failed restore's
// cleanup removes them.
func (p *Plan) CreatedVolumes() []string {
	if p.relocated == nil {
		return nil
	}
	return p.relocated.volumes
}
