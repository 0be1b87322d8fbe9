package head

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs one command to completion and returns its standard output. The head reaches
// mdadm, mkfs, mount and the initiators' tools only through it, so tests check the exact argv
// sequence against a fake.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// CommandError is a command that ran and failed.
type CommandError struct {
	Argv     []string // redacted: see Redact
	ExitCode int      // -1 when it did not exit normally
	Stderr   string
	Err      error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: exit %d: %s", strings.Join(e.Argv, " "), e.ExitCode, msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

// exitCode returns the exit status of a failed command, or -1.
func exitCode(err error) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	return -1
}

// stderrOf returns what a failed command printed on stderr.
func stderrOf(err error) string {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Stderr
	}
	return ""
}

// ExecRunner runs commands on this machine.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return stdout.Bytes(), &CommandError{Argv: Redact(append([]string{name}, args...)), ExitCode: code, Stderr: stderr.String(), Err: err}
	}
	return stdout.Bytes(), nil
}

// Redact hides secrets in an argv before it is logged or put in an error: the value after
// iscsiadm's "-n node.session.auth.password -v".
func Redact(argv []string) []string {
	out := append([]string(nil), argv...)
	for i := 0; i+2 < len(out); i++ {
		if strings.Contains(out[i], "password") && (out[i+1] == "-v" || out[i+1] == "--value") {
			out[i+2] = "REDACTED"
		}
	}
	return out
}
