package coordinator

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParsePeers checks the --peers parser: no panic, and what it accepts
// is a non-empty list of distinct, non-empty ids with non-empty raft
// addresses and API URLs with a scheme and no trailing slash, which
// formats back to a list that parses to the same peers.
func FuzzParsePeers(f *testing.F) {
	for _, s := range []string{
		"coord-0=coord-0.coord:7000=coord-0.coord:8080",
		"a=127.0.0.1:7000=127.0.0.1:8080, b=127.0.0.1:7001=https://127.0.0.1:8081/ ,c=[::1]:7002=http://[::1]:8082",
		"a=x=y,a=x=y",
		"a==y",
		"=x=y",
		"a=x=y=z",
		",,,",
		"",
		"a=x=///",
		"a=x=://",
		"é=\x00=\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		peers, err := ParsePeers(s)
		if err != nil {
			if len(err.Error()) > 10*len(s)+200 { // it quotes the input, escapes at most 4x
				t.Fatalf("error of %d bytes for %d bytes of input", len(err.Error()), len(s))
			}
			return
		}
		if len(peers) == 0 {
			t.Fatal("accepted no peers")
		}
		seen := map[string]bool{}
		var items []string
		for _, p := range peers {
			switch {
			case p.ID == "" || p.RaftAddr == "" || p.APIAddr == "":
				t.Fatalf("accepted an empty field: %+v", p)
			case seen[p.ID]:
				t.Fatalf("accepted id %q twice", p.ID)
			case strings.ContainsAny(p.ID+p.RaftAddr+p.APIAddr, ",="):
				t.Fatalf("a field holds a separator: %+v", p)
			case !strings.Contains(p.APIAddr, "://") || strings.HasSuffix(p.APIAddr, "/"):
				t.Fatalf("API address %q has no scheme or a trailing slash", p.APIAddr)
			case !validURL(p.APIAddr):
				t.Fatalf("API address %q is not an http(s) URL with a host", p.APIAddr)
			case p.ID != strings.TrimSpace(p.ID) && !strings.Contains(s, p.ID):
				t.Fatalf("id %q is not from the input", p.ID)
			}
			seen[p.ID] = true
			items = append(items, p.ID+"="+p.RaftAddr+"="+p.APIAddr)
		}
		again, err := ParsePeers(strings.Join(items, ","))
		if err != nil {
			t.Fatalf("the accepted peers do not parse again: %v", err)
		}
		if len(again) != len(peers) {
			t.Fatalf("reparsed %d peers, had %d", len(again), len(peers))
		}
		for i := range again {
			if again[i] != peers[i] {
				t.Fatalf("peer %d reparsed as %+v, was %+v", i, again[i], peers[i])
			}
		}
	})
}

func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
