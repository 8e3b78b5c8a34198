/* Network policy at a pod's own interface (its eth0, in its namespace): every packet into
 * or out of the pod crosses it, whichever path brought it (the host's forwarding, or a
 * program handing it straight in with bpf_redirect_peer).
 *
 * rr_pol_from_pod (TC egress of the pod's interface: what the pod sends) decides for the
 *   pod whose address is the source, in its egress direction;
 * rr_pol_to_pod (TC ingress of the pod's interface: what reaches the pod) decides for the
 *   pod whose address is the destination, in its ingress direction.
 *
 * A pod not in rr_pol_eps is under no policy: its packets pass untouched and unrecorded.
 * For a pod in it, a packet of a flow it let pass (its tuple in rr_pol_ct, with this
 * direction), or the reply of one (the reversed tuple, with the other direction), passes:
 * the entries are the pod's own, so another pod's decision on the same flow (both ends
 * on this node under policy) never stands for its own. Otherwise it is a new flow: where
 * the pod is not isolated in this direction it passes; where it is, the longest rr_pol
 * entry for (pod, direction, peer) must list the protocol and destination port. A flow
 * that passes is recorded (so its replies pass whatever the other direction's policy).
 * What no entry allows is dropped and counted. A new flow to a service that the pod
 * program balances per packet (compiled with RR_PER_PACKET_LB) passes here and is
 * recorded with the service address: the pod program decides it on the backend it picks
 * (Kubernetes policy is about the backend; lib/policy.h), and its replies come back from
 * the service address. Non-TCP/UDP/SCTP protocols have port 0; an entry that
 * allows every protocol (RR_POL_ANY) allows them. Entries idle past their lifetime count
 * as absent (RR_POL_TCP_LIFETIME / RR_POL_OTHER_LIFETIME seconds); a TCP flow's, once a
 * FIN or RST went by, RR_POL_CLOSE_LIFETIME seconds after its last packet, and a new
 * connection (a SYN) on its tuple is decided anew, so a client port used again after a
 * policy changed meets the policy of the day.
 * A fragmented packet's later fragments are decided with the ports of its first
 * (rr_pol_frags), as the kernel decides on the reassembled packet.
 * IPv6 extension headers are walked to the transport header (up to RR_POL_EXT_MAX of
 * them); a packet whose transport header is not found is refused where the pod is
 * isolated, never let through as a protocol policy does not cover.
 * ICMP errors (unreachable, too big, time exceeded, parameter problem: what the kernel's
 * conntrack calls related, which path MTU discovery needs) and IPv6 neighbour and router
 * discovery (without which no IPv6 packet reaches the pod at all) always pass; echo
 * requests and replies are traffic like any other.
 * As Kubernetes has it, policy covers TCP, UDP, SCTP and ICMP only (other protocols
 * pass); traffic between a pod and its own node (an address in rr_pol_node: the
 * kubelet's probes) is always allowed; and a pod cannot block access to itself (the
 * service loopback source a pod reaching itself through a service is given passes, and
 * so does its reply to that address). A
 * packet a pod sends from one of the node's addresses is dropped: it would pass for the
 * node's own.
 */
#define RR_POLICY_MAPS
#include "maps.h"
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>
#include "lib/policy.h"

#ifndef RR_POL_TCP_LIFETIME
#define RR_POL_TCP_LIFETIME 21600 /* an established TCP flow: 6 h idle */
#endif
#ifndef RR_POL_OTHER_LIFETIME
#define RR_POL_OTHER_LIFETIME 120
#endif
#ifndef RR_POL_CLOSE_LIFETIME
#define RR_POL_CLOSE_LIFETIME 10 /* a TCP flow after its FIN or RST, past its last packet */
#endif
#define RR_POL_SEEN_JIFFIES 100 /* seen is rewritten at most this often */
#define RR_POL_CLOSING 1u       /* rr_pol_ct value's low bit */
#define RR_TCP_FIN 0x01
#define RR_TCP_SYN 0x02
#define RR_TCP_RST 0x04
#define RR_TCP_ACK 0x10
#define RR_POL_IPPROTO_SCTP 132
#define RR_POL_IPPROTO_ICMPV6 58

/* The L4 fields of t's protocol from l4 (ports; the ICMP type or the TCP flags in *l4b),
 * read directly. */
static __always_inline void rr_pol_l4(struct rr_ct_key *t, __u8 *l4b, __u8 *l4, void *end)
{
    if ((void *)(l4 + 4) > end)
        return; /* no room: 0 ports (a port rule then fails closed) */
    if (t->proto == IPPROTO_ICMP || t->proto == RR_POL_IPPROTO_ICMPV6) {
        *l4b = l4[0];
    } else if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP ||
               t->proto == RR_POL_IPPROTO_SCTP) {
        __builtin_memcpy(&t->sport, l4, 2);
        __builtin_memcpy(&t->dport, l4 + 2, 2);
        if (t->proto == IPPROTO_TCP)
            *l4b = (void *)(l4 + 14) <= end ? l4[13] : 0;
    }
}

/* An IPv6 extension header (hop-by-hop, routing, fragment, AH, destination options,
 * mobility): the transport header comes after it. */
static __always_inline int rr_pol_ext(__u8 nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135;
}

#define RR_POL_EXT_MAX 6  /* extension headers walked; past them, the packet is unread */

/* A packet's fragment: state RR_POL_FRAG_FIRST (its ports to remember for the others),
 * RR_POL_FRAG_LATER (no ports of its own: those its first fragment left), or 0. */
enum { RR_POL_FRAG_NONE, RR_POL_FRAG_FIRST, RR_POL_FRAG_LATER };
struct rr_pol_frag {
    __u32 id;
    __u8 state;
};
#define RR_POL_UNREAD 1   /* rr_pol_parse: its transport could not be found */

/* rr_pol_parse without a helper call, for the common packet: its headers in the linear
 * part, IPv4 without options, IPv6 without extension headers. 1 if parsed, 0 to leave
 * it to rr_pol_parse's helpers. */
static __always_inline int rr_pol_parse_direct(struct __sk_buff *skb, struct rr_ct_key *t,
                                               __u8 *l4b, struct rr_pol_frag *fr)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr *ip = data + ETH_HLEN;

        if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5)
            return 0;
        __builtin_memset(t, 0, sizeof(*t));
        t->saddr.w[0] = ip->saddr;
        t->daddr.w[0] = ip->daddr;
        t->proto = ip->protocol;
        t->family = RR_AF_INET;
        if (ip->frag_off & htons(0x3fff)) { /* more fragments, or an offset */
            fr->id = ip->id;
            fr->state = ip->frag_off & htons(0x1fff) ? RR_POL_FRAG_LATER : RR_POL_FRAG_FIRST;
        }
        if (fr->state != RR_POL_FRAG_LATER)
            rr_pol_l4(t, l4b, (__u8 *)(ip + 1), end);
        return 1;
    }
    if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + ETH_HLEN;

        if ((void *)(ip6 + 1) > end || rr_pol_ext(ip6->nexthdr))
            return 0;
        __builtin_memset(t, 0, sizeof(*t));
        __builtin_memcpy(&t->saddr, &ip6->saddr, 16);
        __builtin_memcpy(&t->daddr, &ip6->daddr, 16);
        t->proto = ip6->nexthdr;
        t->family = RR_AF_INET6;
        rr_pol_l4(t, l4b, (__u8 *)(ip6 + 1), end);
        return 1;
    }
    return 0;
}

/* The tuple of skb (Ethernet, then IPv4, or IPv6 and its extension headers); -1 when it
 * is not IP, RR_POL_UNREAD when its transport header could not be found (more extension
 * headers than RR_POL_EXT_MAX, or cut short), else 0. Ports are those of TCP, UDP and SCTP
 * (network order), 0 otherwise and in a fragment after the first. Read directly when the
 * headers are in the linear part, else with helpers. */
static __always_inline int rr_pol_parse(struct __sk_buff *skb, struct rr_ct_key *t,
                                        __u8 *l4b, struct rr_pol_frag *fr)
{
    if (rr_pol_parse_direct(skb, t, l4b, fr))
        return 0;
    __u32 l4 = 0;
    __be16 ports[2] = {0, 0};

    __builtin_memset(t, 0, sizeof(*t));
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr ip;

        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.version != 4)
            return -1;
        t->saddr.w[0] = ip.saddr;
        t->daddr.w[0] = ip.daddr;
        t->proto = ip.protocol;
        t->family = RR_AF_INET;
        if (ip.frag_off & htons(0x3fff)) {
            fr->id = ip.id;
            fr->state = ip.frag_off & htons(0x1fff) ? RR_POL_FRAG_LATER : RR_POL_FRAG_FIRST;
            if (fr->state == RR_POL_FRAG_LATER)
                return 0; /* no ports of its own */
        }
        l4 = ETH_HLEN + ip.ihl * 4;
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;

        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return -1;
        __u8 nh = ip6.nexthdr, eh[2];
        struct {
            __be16 off; /* offset (13 bits), 2 reserved bits, M */
            __be32 id;
        } __attribute__((packed)) frag;
        int i;

        __builtin_memcpy(&t->saddr, &ip6.saddr, 16);
        __builtin_memcpy(&t->daddr, &ip6.daddr, 16);
        t->family = RR_AF_INET6;
        l4 = ETH_HLEN + sizeof(ip6);
#pragma unroll
        for (i = 0; i < RR_POL_EXT_MAX; i++) {
            if (!rr_pol_ext(nh))
                break;
            if (bpf_skb_load_bytes(skb, l4, eh, sizeof(eh)) < 0) {
                t->proto = nh;
                return RR_POL_UNREAD;
            }
            if (nh == 44) { /* fragment: 8 bytes; a later fragment has no ports */
                if (bpf_skb_load_bytes(skb, l4 + 2, &frag, sizeof(frag)) < 0) {
                    t->proto = nh;
                    return RR_POL_UNREAD;
                }
                nh = eh[0];
                l4 += 8;
                if (frag.off & htons(0xfff9)) { /* not an atomic fragment */
                    fr->id = frag.id;
                    fr->state = frag.off & htons(0xfff8) ? RR_POL_FRAG_LATER
                                                         : RR_POL_FRAG_FIRST;
                }
                if (fr->state == RR_POL_FRAG_LATER) {
                    t->proto = nh;
                    return rr_pol_ext(nh) ? RR_POL_UNREAD : 0;
                }
                continue;
            }
            l4 += nh == 51 ? ((__u32)eh[1] + 2) * 4 : ((__u32)eh[1] + 1) * 8;
            nh = eh[0];
        }
        t->proto = nh;
        if (rr_pol_ext(nh))
            return RR_POL_UNREAD;
    } else {
        return -1;
    }
    if (t->proto == IPPROTO_ICMP || t->proto == RR_POL_IPPROTO_ICMPV6) {
        if (bpf_skb_load_bytes(skb, l4, l4b, 1) < 0)
            *l4b = 0xff;
        return 0;
    }
    if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP ||
        t->proto == RR_POL_IPPROTO_SCTP) {
        if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
            return 0;
        t->sport = ports[0];
        t->dport = ports[1];
        if (t->proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, l4 + 13, l4b, 1) < 0)
            *l4b = 0;
    }
    return 0;
}

/* An ICMP error, or IPv6 neighbour / router discovery: passes whatever the policy. */
static __always_inline int rr_pol_always(const struct rr_ct_key *t, __u8 type)
{
    if (t->proto == IPPROTO_ICMP)
        return type == 3 || type == 11 || type == 12; /* unreachable, time exceeded, param */
    if (t->proto == RR_POL_IPPROTO_ICMPV6)
        return (type >= 1 && type <= 4) || (type >= 133 && type <= 137);
    return 0;
}

/* The service loopback address (a pod reaching itself through a service)? */
static __always_inline int rr_pol_is_loopback(const struct rr_addr *a, __u8 family)
{
    if (family == RR_AF_INET)
        return a->w[0] == RR_LOOPBACK4;
    return a->w[0] == RR_LOOPBACK6_0 && a->w[1] == RR_LOOPBACK6_1 &&
           a->w[2] == RR_LOOPBACK6_2 && a->w[3] == RR_LOOPBACK6_3;
}

/* A first fragment's ports are remembered (rr_pol_frags); a later fragment takes them, so
 * it is decided as its packet's first fragment was (without them: ports 0, which a port
 * rule refuses). */
static __always_inline void rr_pol_fragment(struct rr_ct_key *t, const struct rr_pol_frag *fr)
{
    struct rr_pol_frag_key k = {};
    struct rr_pol_ports ports, *got;

    k.saddr = t->saddr;
    k.daddr = t->daddr;
    k.id = fr->id;
    k.proto = t->proto;
    k.family = t->family;
    if (fr->state == RR_POL_FRAG_FIRST) {
        ports.sport = t->sport;
        ports.dport = t->dport;
        rr_pol_frags.update(&k, &ports);
        return;
    }
    got = rr_pol_frags.lookup(&k);
    if (got) {
        t->sport = got->sport;
        t->dport = got->dport;
    }
}

/* Traffic between the pod and its own node, or the pod reaching itself through a service
 * (the service loopback address: its packets, and its replies): always allowed. */
static __always_inline int rr_pol_own(const struct rr_ct_key *t, __u8 dir)
{
    if (dir == RR_POL_EGRESS)
        return rr_pol_is_node(&t->daddr, t->family) || rr_pol_is_loopback(&t->daddr, t->family);
    return rr_pol_is_node(&t->saddr, t->family) || rr_pol_is_loopback(&t->saddr, t->family);
}

/* r: the flow t replies to, as the pod's other direction let it pass. */
static __always_inline void rr_pol_reverse(struct rr_ct_key *r, const struct rr_ct_key *t)
{
    r->saddr = t->daddr;
    r->daddr = t->saddr;
    r->sport = t->dport;
    r->dport = t->sport;
    r->proto = t->proto;
    r->family = t->family;
    r->dir = (RR_POL_INGRESS | RR_POL_EGRESS) ^ t->dir;
    r->pad = 0;
}

/* Is t to a service the pod program balances per packet? Then that program decides the
 * pod's egress on the backend it picks (lib/policy.h), and this one lets it go. */
static __always_inline int rr_pol_to_service(const struct rr_ct_key *t)
{
#if RR_NETWORK_POLICY && RR_PER_PACKET_LB
    struct rr_svc_key k = {};

    k.vip = t->daddr;
    k.port = t->dport;
    k.proto = t->proto;
    k.family = t->family;
    return rr_svc.lookup(&k) != 0;
#else
    return 0;
#endif
}

/* The entry of the flow of key k when it is known and alive (its time refreshed), else
 * 0. An entry's value is the jiffies it was last seen, its low bit RR_POL_CLOSING once a
 * TCP FIN or RST went by: it then lives RR_POL_CLOSE_LIFETIME past its last packet, and a
 * SYN (syn: a connection's first packet) on its tuple is a new connection, decided anew. */
static __always_inline __u32 *rr_pol_flow(const struct rr_ct_key *k, __u32 now, int syn)
{
    __u32 *seen = rr_pol_ct.lookup((struct rr_ct_key *)k);
    __u32 life, at;

    if (!seen)
        return 0;
    at = *seen & ~RR_POL_CLOSING; /* (with the bit, it could be past now) */
    if (*seen & RR_POL_CLOSING) {
        if (syn)
            return 0;
        life = RR_POL_CLOSE_LIFETIME * RR_HZ;
    } else {
        life = (k->proto == IPPROTO_TCP ? RR_POL_TCP_LIFETIME : RR_POL_OTHER_LIFETIME) * RR_HZ;
    }
    if (now - at > life)
        return 0;
    if (now - at >= RR_POL_SEEN_JIFFIES)
        *seen = (now & ~RR_POL_CLOSING) | (*seen & RR_POL_CLOSING);
    return seen;
}

static __always_inline int rr_pol_decide(struct __sk_buff *skb, __u8 dir)
{
    struct rr_ct_key t, r;
    struct rr_pol_ep_key ek = {};
    struct rr_pol_ep *ep;
    __u32 now, one, *seen;
    __u8 l4b = 0xff; /* the ICMP type, or the TCP flags */
    struct rr_pol_frag fr = {};
    int syn, parsed = rr_pol_parse(skb, &t, &l4b, &fr);

    if (parsed < 0 || (parsed == 0 && rr_pol_always(&t, l4b)))
        return TC_ACT_OK;
    if (parsed == 0 && t.proto != IPPROTO_TCP && t.proto != IPPROTO_UDP &&
        t.proto != RR_POL_IPPROTO_SCTP && t.proto != IPPROTO_ICMP &&
        t.proto != RR_POL_IPPROTO_ICMPV6)
        return TC_ACT_OK; /* not a protocol policy covers */
    ek.addr = dir == RR_POL_EGRESS ? t.saddr : t.daddr;
    ek.family = t.family;
    ep = rr_pol_eps.lookup(&ek);
    if (!ep) {
        if (dir == RR_POL_EGRESS && rr_pol_is_node(&t.saddr, t.family)) {
            rr_pol_count(RR_POL_DROPPED); /* a pod sending as its node */
            return TC_ACT_SHOT;
        }
        return TC_ACT_OK; /* under no policy */
    }
    if (parsed == RR_POL_UNREAD) { /* it could be anything: refused where isolated */
        if (!(ep->flags & dir) || rr_pol_own(&t, dir))
            return TC_ACT_OK;
        rr_pol_refused(ep->id);
        return TC_ACT_SHOT;
    }
    if (__builtin_expect(fr.state != RR_POL_FRAG_NONE, 0)) {
        if (fr.state == RR_POL_FRAG_LATER)
            l4b = 0; /* no flags of its own either */
        rr_pol_fragment(&t, &fr);
    }
    /* a flow let pass before (most packets): asked first */
    now = (__u32)bpf_jiffies64();
    t.dir = dir;
    rr_pol_reverse(&r, &t);
    syn = t.proto == IPPROTO_TCP && (l4b & (RR_TCP_SYN | RR_TCP_ACK)) == RR_TCP_SYN;
    seen = rr_pol_flow(&t, now, syn);
    if (!seen)
        seen = rr_pol_flow(&r, now, syn);
    if (seen) {
        if (t.proto == IPPROTO_TCP && (l4b & (RR_TCP_FIN | RR_TCP_RST)))
            *seen = (now & ~RR_POL_CLOSING) | RR_POL_CLOSING;
        rr_pol_count(RR_POL_PASSED);
        return TC_ACT_OK;
    }
    if (rr_pol_own(&t, dir))
        return TC_ACT_OK;
    if ((ep->flags & dir) &&
        !rr_pol_allows(ep->id, dir, &t, dir == RR_POL_EGRESS ? &t.daddr : &t.saddr,
                       ntohs(t.dport)) &&
        !(dir == RR_POL_EGRESS && rr_pol_to_service(&t))) {
        rr_pol_refused(ep->id);
        return TC_ACT_SHOT;
    }
    one = now & ~RR_POL_CLOSING;
    rr_pol_ct.update(&t, &one);
    rr_pol_count(RR_POL_NEW);
    return TC_ACT_OK;
}

int rr_pol_from_pod(struct __sk_buff *skb)
{
    return rr_pol_decide(skb, RR_POL_EGRESS);
}

int rr_pol_to_pod(struct __sk_buff *skb)
{
    return rr_pol_decide(skb, RR_POL_INGRESS);
}
