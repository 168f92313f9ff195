package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// againKey holds, in a command's context, the channel closed by a second
// interrupt.
type againKey struct{}

// notifyInterrupts is signal.NotifyContext for SIGINT and SIGTERM, that
// also sees the second signal: a push waiting for its checkpoint stops
// waiting then (secondInterrupt).
func notifyInterrupts(parent context.Context) (context.Context, context.CancelFunc) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, stop := watchInterrupts(parent, sigs)
	return ctx, func() {
		signal.Stop(sigs)
		stop()
	}
}

// watchInterrupts cancels its context at the first value from sigs and
// closes secondInterrupt's channel at the second.
func watchInterrupts(parent context.Context, sigs <-chan os.Signal) (context.Context, context.CancelFunc) {
	again := make(chan struct{})
	stopped := make(chan struct{})
	ctx, cancel := context.WithCancel(context.WithValue(parent, againKey{}, (<-chan struct{})(again)))
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-stopped:
			return
		}
		select {
		case <-sigs:
			close(again)
		case <-stopped:
		}
	}()
	return ctx, func() {
		cancel()
		close(stopped)
	}
}

// secondInterrupt is closed by a second interrupt; nil (never) outside
// notifyInterrupts.
func secondInterrupt(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(againKey{}).(<-chan struct{})
	return ch
}
