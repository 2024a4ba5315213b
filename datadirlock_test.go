package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataDirLocked: a second server on a SQLite data directory in use
// refuses to start at once, naming the directory and the holder's pid,
// and leaves the directory to the first; once the first has stopped, a
// start on it succeeds.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	first := startChild(t, dir, filepath.Join(dir, "platform.db"))

	env := envMap(map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_LOG_LEVEL": "warn"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := run(ctx, nil, env, io.Discard, io.Discard)
	want := fmt.Sprintf("data directory %s is in use by another platform-api (pid %d); stop it or use another PLATFORM_DATA_DIR", dir, first.cmd.Process.Pid)
	if err == nil || err.Error() != want {
		t.Fatalf("second start on the same data directory: %v\nwant: %s", err, want)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the refusal took %s", took)
	}

	first.cmd.Process.Kill() // as a crash would: the kernel drops the lock
	first.cmd.Wait()
	ctx, stop := context.WithCancel(context.Background())
	stdout := lineWriter{make(chan string, 10)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, stdout, io.Discard) }()
	select {
	case line := <-stdout.lines:
		if !strings.HasPrefix(line, "platform-api listening on ") {
			t.Fatalf("stdout: %q", line)
		}
	case err := <-done:
		t.Fatalf("start once the first had stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not report its address")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
