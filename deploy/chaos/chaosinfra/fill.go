package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
)

// runHold does nothing until it is stopped: the soak's keeper container
// runs it to hold the checkpoint tmpfs volume mounted (a tmpfs volume
// loses its contents when the last container using it stops, and a
// restart of every modcoord container must not wipe committed checkpoints).
func runHold(ctx context.Context, _ []string) error {
	<-ctx.Done()
	return nil
}

// runFill writes zeros to --path until the file system is full (ENOSPC),
// and prints how many bytes it took; with --remove it deletes the file.
func runFill(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	path := fs.String("path", "", "file to grow until the file system is full")
	remove := fs.Bool("remove", false, "delete the file instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("fill: --path is required")
	}
	if *remove {
		if err := os.Remove(*path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fill: %w", err)
		}
		fmt.Println("removed")
		return nil
	}
	f, err := os.OpenFile(*path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			fmt.Printf("full after %d bytes\n", n)
			return nil
		}
		if err != nil {
			return fmt.Errorf("fill after %d bytes: %w", n, err)
		}
		if w < len(buf) {
			buf = buf[:max(4096, len(buf)/2)]
		}
	}
}
