package dhcp_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// Options firmware sends, as byte strings.
var (
	ipxeFeatures = dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{0x13, 1, 1, 0x19, 1, 1, 0x21, 1, 1}) // iPXE feature list
	ipxeUserCl   = dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(77), []byte("iPXE"))
)

func archOpt(a dhcp.Arch) dhcpv4.Option {
	return dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(93), []byte{byte(a >> 8), byte(a)})
}

func vendor(s string) dhcpv4.Option { return dhcpv4.OptClassIdentifier(s) }

// bootView is what a client learns about booting from an offer.
type bootView struct {
	File        string // file field, or option 67 when the field is empty
	NextServer  string
	VendorClass string // option 60 in the reply
	PXEControl  []byte // option 43, sub-option 6
	NoProxyWait []byte // option 175, sub-option 176
}

func viewOf(m *dhcpv4.DHCPv4) bootView {
	v := bootView{File: m.BootFileName, VendorClass: m.ClassIdentifier()}
	if v.File == "" {
		v.File = m.BootFileNameOption()
	}
	if !m.ServerIPAddr.IsUnspecified() {
		v.NextServer = m.ServerIPAddr.String()
	}
	var e dhcp.EncapsulatedOptions
	if b := m.GetOneOption(dhcpv4.GenericOptionCode(43)); b != nil && e.UnmarshalBinary(b) == nil {
		v.PXEControl, _ = e.Get(6)
	}
	if b := m.GetOneOption(dhcpv4.GenericOptionCode(175)); b != nil && e.UnmarshalBinary(b) == nil {
		v.NoProxyWait, _ = e.Get(176)
	}
	return v
}

// exchange runs DISCOVER/OFFER/REQUEST/ACK with a crafted firmware identity and
// returns the offer and the ack.
func exchange(t *testing.T, ns *lab.Netns, ifname string, hw net.HardwareAddr, opts ...dhcpv4.Option) (offer, ack *dhcpv4.DHCPv4) {
	t.Helper()
	var mods []dhcpv4.Modifier
	for _, o := range opts {
		mods = append(mods, dhcpv4.WithOption(o))
	}
	err := ns.Do(func() error {
		c, err := nclient4.New(ifname, nclient4.WithHWAddr(hw), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		ctx := context.Background()
		if offer, err = c.DiscoverOffer(ctx, mods...); err != nil {
			return err
		}
		l, err := c.RequestFromOffer(ctx, offer, mods...)
		if err != nil {
			return err
		}
		ack = l.ACK
		return nil
	})
	if err != nil {
		t.Fatalf("DHCP exchange for %v: %v", hw, err)
	}
	return offer, ack
}

// A PXE-style DISCOVER per architecture, an iPXE DISCOVER and a plain OS
// client each get the right boot file or URL, with the options that end the
// firmware's ProxyDHCP wait.
func TestBootFilePerFirmware(t *testing.T) {
	tn := newTestNet(t)
	nodes := newFakeNodes()
	srv := tn.start(t, tn.config(t), nodes)
	_ = srv
	ip := tn.serverIP.String()
	base := "http://" + ip
	hw := func(i byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0x67, 0, 0, 0, i} }
	skip := []byte{1}
	ctl := []byte{8}
	tests := []struct {
		name string
		hw   net.HardwareAddr
		opts []dhcpv4.Option
		want bootView
	}{
		{"bios-pxe", hw(1), []dhcpv4.Option{vendor("PXEClient:Arch:00000:UNDI:002001"), archOpt(dhcp.ArchBIOS)},
			bootView{File: "undionly.kpxe", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"uefi-x64", hw(2), []dhcpv4.Option{vendor("PXEClient:Arch:00007:UNDI:003016"), archOpt(dhcp.ArchX64)},
			bootView{File: "snponly.efi", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"uefi-x64-as-9", hw(3), []dhcpv4.Option{vendor("PXEClient:Arch:00009:UNDI:003016"), archOpt(dhcp.ArchEFIBC)},
			bootView{File: "snponly.efi", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"uefi-arm64", hw(4), []dhcpv4.Option{vendor("PXEClient:Arch:00011:UNDI:003000"), archOpt(dhcp.ArchARM64)},
			bootView{File: "snp-arm64.efi", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"uefi-http-x64", hw(5), []dhcpv4.Option{vendor("HTTPClient:Arch:00016:UNDI:003001"), archOpt(dhcp.ArchX64HTTP)},
			bootView{File: base + "/boot/snponly.efi", NextServer: ip, VendorClass: "HTTPClient", NoProxyWait: skip}},
		{"ipxe", hw(6), []dhcpv4.Option{vendor("PXEClient:Arch:00000:UNDI:002001"), archOpt(dhcp.ArchBIOS), ipxeUserCl, ipxeFeatures},
			bootView{File: base + "/boot/02:67:00:00:00:06.ipxe", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"ipxe-175-only", hw(7), []dhcpv4.Option{vendor("PXEClient:Arch:00007:UNDI:003016"), archOpt(dhcp.ArchX64), ipxeFeatures},
			bootView{File: base + "/boot/02:67:00:00:00:07.ipxe", NextServer: ip, VendorClass: "PXEClient", PXEControl: ctl, NoProxyWait: skip}},
		{"os-client", hw(8), []dhcpv4.Option{vendor("udhcp 1.35.0")}, bootView{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			offer, ack := exchange(t, tn.cli, tn.cliIf, tc.hw, tc.opts...)
			if d := cmp.Diff(tc.want, viewOf(offer)); d != "" {
				t.Errorf("offer boot info (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.want, viewOf(ack)); d != "" {
				t.Errorf("ack boot info (-want +got):\n%s", d)
			}
			if offer.YourIPAddr.IsUnspecified() || !offer.YourIPAddr.Equal(ack.YourIPAddr) {
				t.Errorf("offer %v, ack %v: want the same address", offer.YourIPAddr, ack.YourIPAddr)
			}
		})
	}
	// Every machine was reported to the registry, with what it is.
	seen := nodes.seenMACs()
	for _, c := range []struct {
		mac  string
		arch dhcp.Arch
		ipxe bool
	}{{"02:67:00:00:00:04", dhcp.ArchARM64, false}, {"02:67:00:00:00:06", dhcp.ArchBIOS, true}} {
		ci, ok := seen[c.mac]
		if !ok || ci.Arch != c.arch || ci.IPXE != c.ipxe || ci.Known {
			t.Errorf("Seen(%s) = %+v (reported %v), want arch %v ipxe %v unknown", c.mac, ci, ok, c.arch, c.ipxe)
		}
	}
}

// With SkipProxyDHCPWait off, offers carry no iPXE no-ProxyDHCP flag.
func TestProxyWaitSwitchOff(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.SkipProxyDHCPWait = false
	tn.start(t, cfg, nil)
	offer, _ := exchange(t, tn.cli, tn.cliIf, net.HardwareAddr{2, 0x67, 1, 1, 1, 1},
		vendor("PXEClient:Arch:00000:UNDI:002001"), ipxeUserCl, ipxeFeatures)
	v := viewOf(offer)
	if v.NoProxyWait != nil || v.PXEControl != nil || v.VendorClass != "" {
		t.Errorf("switch off: got 175.176=%v 43.6=%v 60=%q, want none (a stock server's offer)", v.NoProxyWait, v.PXEControl, v.VendorClass)
	}
	if v.File == "" {
		t.Errorf("switch off must not remove the boot file")
	}
}
