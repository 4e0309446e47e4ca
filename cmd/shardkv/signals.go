package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// exitSecondSignal is the exit code of a process stopped by a second
// SIGINT or SIGTERM (128 + SIGINT, the shell's convention).
const exitSecondSignal = 130

// stopOnSignal returns a context that ends on the first SIGINT or SIGTERM:
// the process then stops cleanly (groups first, then the controller; see
// cluster.Close). A second signal exits at once with exitSecondSignal,
// saying so: an operator who presses Ctrl-C twice wants out now. Nothing
// acknowledged is lost either way (every acknowledged write is fsynced).
func stopOnSignal(parent context.Context, log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			log.Info("stopping; send the signal again to exit at once", "signal", s.String())
			cancel()
		case <-ctx.Done():
			return
		}
		s := <-sigs
		log.Warn("second signal: exiting at once", "signal", s.String(), "exit_code", exitSecondSignal)
		os.Exit(exitSecondSignal)
	}()
	return ctx, cancel
}
