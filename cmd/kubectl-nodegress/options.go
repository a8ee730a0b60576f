package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// options are the plugin's own flags; everything else goes to the agent's
// command.
type options struct {
	kubeconfig string
	overrides  clientcmd.ConfigOverrides
	nodes      []string
	selector   string
	container  string
	binary     string
	output     string
	// duration and pcap are also flags of `nodegress trace`: the plugin
	// reads them too (to stop, and to write the capture locally).
	duration time.Duration
	pcap     string

	connect connectFunc
}

// connectFunc gives the API client and the way into the agents' pods.
type connectFunc func(o *options) (kubernetes.Interface, execer, error)

func newOptions(connect connectFunc) *options {
	if connect == nil {
		connect = connectKubeconfig
	}
	return &options{connect: connect}
}

func (o *options) flagSet(cmd string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(cmd, pflag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, clientcmd.RecommendedConfigPathFlag, "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(&o.overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	fs.StringArrayVar(&o.nodes, "node", nil, "a node to ask (repeatable, comma-separated)")
	fs.StringVar(&o.selector, "agent-selector", defaultSelector, "labels of the agent pods")
	fs.StringVar(&o.container, "agent-container", defaultContainer, "the agent's container")
	fs.StringVar(&o.binary, "agent-binary", defaultBinary, "the nodegress binary in the agent's container")
	if cmd == "trace" {
		fs.StringVarP(&o.output, "output", "o", "text", "text or json")
		fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
		fs.StringVar(&o.pcap, "pcap", "", "write the capture of one node to FILE (- for standard output)")
	}
	return fs
}

func (o *options) validate() error {
	switch o.output {
	case "", "text", "json":
	default:
		return fmt.Errorf("unknown output format %q (want text or json)", o.output)
	}
	if o.duration < 0 {
		return fmt.Errorf("duration %s: must not be negative", o.duration)
	}
	return nil
}

// namespace is where the agents run: -n when given, else the manifests'
// namespace, not the kubeconfig context's (which is where the user's own
// workloads are).
func (o *options) namespace() string {
	if o.overrides.Context.Namespace != "" {
		return o.overrides.Context.Namespace
	}
	return defaultNamespace
}

// connectKubeconfig loads the client configuration as kubectl does
// (KUBECONFIG, ~/.kube/config, in-cluster, and the override flags).
func connectKubeconfig(o *options) (kubernetes.Interface, execer, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &o.overrides).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, nil, fmt.Errorf("create API client: %w", err)
	}
	return client, podExec{config: config, client: client}, nil
}
