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
 * as absent (RR_POL_TCP_LIFETIME / RR_POL_OTHER_LIFETIME seconds).
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
#define RR_POL_SEEN_JIFFIES 100 /* seen is rewritten at most this often */
#define RR_POL_IPPROTO_SCTP 132
#define RR_POL_IPPROTO_ICMPV6 58

/* The L4 fields of t's protocol from l4 (ports, or the ICMP type), read directly. */
static __always_inline void rr_pol_l4(struct rr_ct_key *t, __u8 *icmp_type, __u8 *l4,
                                      void *end)
{
    if ((void *)(l4 + 4) > end)
        return; /* no room: 0 ports (a port rule then fails closed) */
    if (t->proto == IPPROTO_ICMP || t->proto == RR_POL_IPPROTO_ICMPV6) {
        *icmp_type = l4[0];
    } else if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP ||
               t->proto == RR_POL_IPPROTO_SCTP) {
        __builtin_memcpy(&t->sport, l4, 2);
        __builtin_memcpy(&t->dport, l4 + 2, 2);
    }
}

/* rr_pol_parse without a helper call, for the common packet: its headers in the linear
 * part, IPv4 without options. 1 if parsed, 0 to leave it to rr_pol_parse's helpers. */
static __always_inline int rr_pol_parse_direct(struct __sk_buff *skb, struct rr_ct_key *t,
                                               __u8 *icmp_type)
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
        if (!(ip->frag_off & htons(0x1fff)))
            rr_pol_l4(t, icmp_type, (__u8 *)(ip + 1), end);
        return 1;
    }
    if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + ETH_HLEN;

        if ((void *)(ip6 + 1) > end)
            return 0;
        __builtin_memset(t, 0, sizeof(*t));
        __builtin_memcpy(&t->saddr, &ip6->saddr, 16);
        __builtin_memcpy(&t->daddr, &ip6->daddr, 16);
        t->proto = ip6->nexthdr;
        t->family = RR_AF_INET6;
        rr_pol_l4(t, icmp_type, (__u8 *)(ip6 + 1), end);
        return 1;
    }
    return 0;
}

/* The tuple of skb (Ethernet, then IPv4 or IPv6 with no extension header); -1 when it is
 * not IP. Ports are those of TCP, UDP and SCTP (network order), 0 otherwise. Read
 * directly when the headers are in the linear part, else with helpers. */
static __always_inline int rr_pol_parse(struct __sk_buff *skb, struct rr_ct_key *t,
                                        __u8 *icmp_type)
{
    if (rr_pol_parse_direct(skb, t, icmp_type))
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
        if (ip.frag_off & htons(0x1fff)) /* a later fragment: no ports */
            return 0;
        l4 = ETH_HLEN + ip.ihl * 4;
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;

        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return -1;
        __builtin_memcpy(&t->saddr, &ip6.saddr, 16);
        __builtin_memcpy(&t->daddr, &ip6.daddr, 16);
        t->proto = ip6.nexthdr;
        t->family = RR_AF_INET6;
        l4 = ETH_HLEN + sizeof(ip6);
    } else {
        return -1;
    }
    if (t->proto == IPPROTO_ICMP || t->proto == RR_POL_IPPROTO_ICMPV6) {
        if (bpf_skb_load_bytes(skb, l4, icmp_type, 1) < 0)
            *icmp_type = 0xff;
        return 0;
    }
    if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP ||
        t->proto == RR_POL_IPPROTO_SCTP) {
        if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
            return 0;
        t->sport = ports[0];
        t->dport = ports[1];
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

/* Is the flow of key k known and alive? Refreshes its time when it is. */
static __always_inline int rr_pol_known(const struct rr_ct_key *k, __u32 now)
{
    __u32 *seen = rr_pol_ct.lookup((struct rr_ct_key *)k);
    __u32 life = (k->proto == IPPROTO_TCP ? RR_POL_TCP_LIFETIME : RR_POL_OTHER_LIFETIME) * RR_HZ;

    if (!seen || now - *seen > life)
        return 0;
    if (now - *seen >= RR_POL_SEEN_JIFFIES)
        *seen = now;
    return 1;
}

static __always_inline int rr_pol_decide(struct __sk_buff *skb, __u8 dir)
{
    struct rr_ct_key t, r;
    struct rr_pol_ep_key ek = {};
    struct rr_pol_ep *ep;
    __u32 now, one;
    __u8 icmp_type = 0xff;

    if (rr_pol_parse(skb, &t, &icmp_type) < 0 || rr_pol_always(&t, icmp_type))
        return TC_ACT_OK;
    if (t.proto != IPPROTO_TCP && t.proto != IPPROTO_UDP && t.proto != RR_POL_IPPROTO_SCTP &&
        t.proto != IPPROTO_ICMP && t.proto != RR_POL_IPPROTO_ICMPV6)
        return TC_ACT_OK; /* not a protocol policy covers */
    if (dir == RR_POL_EGRESS && rr_pol_is_node(&t.saddr, t.family)) {
        rr_pol_count(RR_POL_DROPPED); /* a pod sending as its node */
        return TC_ACT_SHOT;
    }
    ek.addr = dir == RR_POL_EGRESS ? t.saddr : t.daddr;
    ek.family = t.family;
    ep = rr_pol_eps.lookup(&ek);
    if (!ep)
        return TC_ACT_OK; /* under no policy */
    if (dir == RR_POL_EGRESS ? rr_pol_is_node(&t.daddr, t.family) ||
                                   rr_pol_is_loopback(&t.daddr, t.family)
                             : rr_pol_is_node(&t.saddr, t.family) ||
                                   rr_pol_is_loopback(&t.saddr, t.family))
        return TC_ACT_OK; /* to or from its own node, or itself through a service (the
                           * service loopback address: its packets, and its replies) */
    now = (__u32)bpf_jiffies64();
    t.dir = dir;
    rr_pol_reverse(&r, &t);
    if (rr_pol_known(&t, now) || rr_pol_known(&r, now)) {
        rr_pol_count(RR_POL_PASSED);
        return TC_ACT_OK;
    }
    if ((ep->flags & dir) &&
        !rr_pol_allows(ep->id, dir, &t, dir == RR_POL_EGRESS ? &t.daddr : &t.saddr,
                       ntohs(t.dport)) &&
        !(dir == RR_POL_EGRESS && rr_pol_to_service(&t))) {
        rr_pol_count(RR_POL_DROPPED);
        return TC_ACT_SHOT;
    }
    one = now;
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
