package debian

import "os"

// CacheDirForTests is the download cache tests and benchmarks share
// ($DISTONET_CACHE, default /var/cache/distonet/debian), so a run downloads once.
func CacheDirForTests() string {
	if d := os.Getenv("DISTONET_CACHE"); d != "" {
		return d
	}
	return "/var/cache/distonet/debian"
}
