package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// standaloneMaglevSeed seeds Maglev where no cluster object can: every
// agent of this version agrees on it.
const standaloneMaglevSeed = 0x6e677264

// maglevSeed is the seed every node of the cluster must share: the flag
// when given, else a hash of the UID of the default/kubernetes Service,
// which the API server creates once per cluster and every agent may read.
func maglevSeed(flag string, client kubernetes.Interface, log *slog.Logger) (uint32, error) {
	if flag != "" {
		v, err := strconv.ParseUint(flag, 0, 32)
		if err != nil {
			return 0, fmt.Errorf("--maglev-seed %q: %w", flag, err)
		}
		return uint32(v), nil
	}
	if client == nil {
		return standaloneMaglevSeed, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		// Other nodes may derive theirs: warn, as they then disagree.
		log.Warn("cannot read default/kubernetes for the Maglev seed; using the fixed one (set --maglev-seed on every node)", "err", err)
		return standaloneMaglevSeed, nil
	}
	h := fnv.New32a()
	h.Write([]byte(svc.UID))
	return h.Sum32(), nil
}
