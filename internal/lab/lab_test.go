package lab_test

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	m.Run()
}

// A veth pair carries TCP between an in-process server in one namespace and a client process
// in another, and both namespaces are gone afterwards.
func TestVethCarriesTrafficAndCleansUp(t *testing.T) {
	var names []string
	t.Run("traffic", func(t *testing.T) {
		lab.Require(t, "busybox")
		server, client := lab.NewNetns(t), lab.NewNetns(t)
		names = append(names, server.Name(), client.Name())
		lab.Veth(t, server, "10.250.0.1/24", client, "10.250.0.2/24")

		l, err := server.Listen("tcp", "10.250.0.1:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		peer := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				peer <- err.Error()
				return
			}
			defer c.Close()
			peer <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "echo:%s", line)
		}()
		out, err := client.Exec("sh", "-c", "echo hello | busybox nc 10.250.0.1 7000")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != "echo:hello" {
			t.Fatalf("reply = %q, want %q", got, "echo:hello")
		}
		// The connection came over the veth, from the client namespace's address.
		if got := <-peer; got != "10.250.0.2" {
			t.Fatalf("server saw the client as %s, want 10.250.0.2 (the veth peer)", got)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still exists after the test", n)
		}
	}
	if len(names) != 2 {
		t.Fatalf("expected two namespaces to be created, got %v", names)
	}
}
