package export

import (
	"testing"
	"time"
)

func TestStallAfter(t *testing.T) {
	for _, tt := range []struct {
		o    PushOptions
		want time.Duration
	}{
		{PushOptions{}, DefaultStall},
		{PushOptions{CheckpointTimeout: 10 * time.Minute}, DefaultStall},
		{PushOptions{CheckpointTimeout: 20 * time.Second}, 10 * time.Second},
		{PushOptions{CheckpointTimeout: time.Minute, CheckpointStall: time.Second}, time.Second},
	} {
		if got := stallAfter(tt.o); got != tt.want {
			t.Errorf("stallAfter(timeout %s, stall %s) = %s, want %s", tt.o.CheckpointTimeout, tt.o.CheckpointStall, got, tt.want)
		}
	}
}
