package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// The data of -open streams is specified in ../README.md; these vectors were computed with an
// independent implementation of that description, so a TypeScript port can use them too.
func TestGenVectors(t *testing.T) {
	for _, tc := range []struct {
		seed       uint64
		index      int
		first16    string
		sha1MiB    string
		sha13Bytes string
	}{
		{0, 0, "afcd1d7b39a820e2f465b9a16a9e786e",
			"bc9d1d01517351f3e2c02d32495b3bfbcba5ec54e5f1a44b06f51755d0086a01",
			"402387c3198674ec4821c567708bc2a5e99e142b16ca24f3eb40f9c7b5c78ef5"},
		{1, 2, "22705094d83a70b32be5e3360877b0ac",
			"980c50852e9bf01404419a8f2bb6548dcd7c20d8421403696e8be7013e9ea675",
			"ef9dc209f82fe11ba41866b504dbde3b06cf44a595ac69d0d3c3118e857000c6"},
	} {
		buf := make([]byte, 1<<20)
		newGen(tc.seed, tc.index).fill(buf)
		if got := hex.EncodeToString(buf[:16]); got != tc.first16 {
			t.Errorf("seed=%d index=%d: first 16 bytes %s, want %s", tc.seed, tc.index, got, tc.first16)
		}
		if s := sha256.Sum256(buf); hex.EncodeToString(s[:]) != tc.sha1MiB {
			t.Errorf("seed=%d index=%d: sha256 of 1 MiB %x, want %s", tc.seed, tc.index, s, tc.sha1MiB)
		}
		small := make([]byte, 13)
		newGen(tc.seed, tc.index).fill(small)
		if s := sha256.Sum256(small); hex.EncodeToString(s[:]) != tc.sha13Bytes {
			t.Errorf("seed=%d index=%d: sha256 of 13 bytes %x, want %s", tc.seed, tc.index, s, tc.sha13Bytes)
		}
	}
}

// Filling in pieces of any length must give the same bytes as one fill.
func TestGenChunking(t *testing.T) {
	want := make([]byte, 10000)
	newGen(7, 3).fill(want)
	for _, step := range []int{1, 3, 7, 8, 9, 13, 4096, 32 * 1024} {
		got := make([]byte, 0, len(want))
		g := newGen(7, 3)
		for len(got) < len(want) {
			n := step
			if len(want)-len(got) < n {
				n = len(want) - len(got)
			}
			p := make([]byte, n)
			g.fill(p)
			got = append(got, p...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("step %d: bytes differ", step)
		}
	}
}

func TestFirstMismatch(t *testing.T) {
	if i := firstMismatch([]byte("abcd"), []byte("abcd")); i != -1 {
		t.Errorf("equal: got %d", i)
	}
	if i := firstMismatch([]byte("abXd"), []byte("abcd")); i != 2 {
		t.Errorf("differ at 2: got %d", i)
	}
}
