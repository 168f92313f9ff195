package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// retryFlags are podman push's and pull's --retry and --retry-delay.
type retryFlags struct {
	retries int
	delay   time.Duration
}

func addRetryFlags(f *pflag.FlagSet) *retryFlags {
	r := &retryFlags{}
	f.IntVar(&r.retries, "retry", transfer.DefaultRetries, "retry a transient registry failure (connection reset, HTTP 5xx, 429) this many times")
	f.DurationVar(&r.delay, "retry-delay", 0, "pause between retries (default: exponential backoff from 2s)")
	return r
}

func (r *retryFlags) set(o transfer.Options) transfer.Options {
	o.Retries, o.RetryDelay = r.retries, r.delay
	if r.retries == 0 {
		o.Retries = -1 // --retry 0: never
	}
	return o
}
