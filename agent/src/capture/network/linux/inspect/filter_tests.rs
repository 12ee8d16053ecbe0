//! The inspection program run by a small cBPF interpreter (the subset of
//! opcodes it uses, with the kernel's rule that a load beyond the packet
//! ends the program with 0) over packets built as they are on the wire.

use super::*;

struct Ctx {
    pkttype: u32,
    ifindex: u32,
    protocol: u32,
}

const IN_ETH: Ctx = Ctx {
    pkttype: 0,
    ifindex: 2,
    protocol: 0x0800,
};

fn run(prog: &[Insn], pkt: &[u8], ctx: &Ctx) -> u32 {
    let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    let load = |off: u32, size: u16| -> Option<u32> {
        let off = off as usize;
        let n = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        let b = pkt.get(off..off + n)?;
        Some(b.iter().fold(0u32, |v, &b| v << 8 | u32::from(b)))
    };
    loop {
        let i = prog[pc];
        pc += 1;
        let (class, size, mode) = (i.code & 0x07, i.code & 0x18, i.code & 0xe0);
        match class {
            LD if mode == ABS && i.k >= AD_OFF => {
                a = match i.k {
                    AD_PROTOCOL => ctx.protocol,
                    AD_PKTTYPE => ctx.pkttype,
                    AD_IFINDEX => ctx.ifindex,
                    k => panic!("ancillary {k:#x}"),
                }
            }
            LD => {
                let v = match mode {
                    ABS => load(i.k, size),
                    IND => load(x.wrapping_add(i.k), size),
                    MEM => Some(m[i.k as usize]),
                    _ => panic!("ld mode {mode:#x}"),
                };
                match v {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LDX => match mode {
                IMM => x = i.k,
                MSH => match pkt.get(i.k as usize) {
                    Some(b) => x = 4 * u32::from(b & 0x0f),
                    None => return 0,
                },
                _ => panic!("ldx mode {mode:#x}"),
            },
            ST => m[i.k as usize] = a,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                match i.code & 0xf0 {
                    ADD => a = a.wrapping_add(v),
                    AND => a &= v,
                    RSH => a >>= v,
                    op => panic!("alu {op:#x}"),
                }
            }
            JMP if i.code & 0xf0 == JA => pc += i.k as usize,
            JMP => {
                let v = if i.code & X != 0 { x } else { i.k };
                let yes = match i.code & 0xf0 {
                    JEQ => a == v,
                    JGT => a > v,
                    JSET => a & v != 0,
                    op => panic!("jump {op:#x}"),
                };
                pc += usize::from(if yes { i.jt } else { i.jf });
            }
            RET if i.code & RET_A != 0 => return a,
            RET => return i.k,
            MISC if i.code & TXA != 0 => a = x,
            MISC => x = a,
            c => panic!("class {c:#x} not in the interpreter"),
        }
    }
}

fn ipv4(proto: u8, ihl_words: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let hlen = usize::from(ihl_words) * 4;
    let total = (hlen + l4.len()) as u16;
    let mut p = vec![0x40 | ihl_words, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 5, 10, 0, 0, 9]);
    p.resize(hlen, 1); // options
    p.extend_from_slice(l4);
    p
}

fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&[0xfd; 32]);
    p.extend_from_slice(l4);
    p
}

fn tcp(option_words: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0x9c, 0x40, 0x1a, 0xe1, 0, 0, 0, 1, 0, 0, 0, 0];
    t.push((5 + option_words) << 4);
    t.extend_from_slice(&[0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + 4 * usize::from(option_words), 1);
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&6881u16.to_be_bytes());
    u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

#[test]
fn what_passes_and_how_much() {
    let prog = program().expect("assembles");
    assert!(prog.len() < 100, "{} instructions", prog.len());
    let hs = include_bytes!("../../p2p/testdata/aria2-handshake.bin");
    let get = b"GET /announce?info_hash=%12 HTTP/1.1\r\n";
    let krpc = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let mut connect = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
    let utp = |first: u8| {
        let mut v = vec![first, 0];
        v.resize(20, 0);
        v
    };
    let sp = SNAP_PAYLOAD;
    let v6 = Ctx {
        protocol: 0x86dd,
        ..IN_ETH
    };
    let out_eth = Ctx {
        pkttype: PACKET_OUTGOING,
        ..IN_ETH
    };
    let out_lo = Ctx {
        pkttype: PACKET_OUTGOING,
        ifindex: 1,
        ..IN_ETH
    };
    let in_lo = Ctx {
        ifindex: 1,
        ..IN_ETH
    };
    let other = Ctx {
        pkttype: PACKET_OTHERHOST,
        ..IN_ETH
    };
    let arp = Ctx {
        protocol: 0x0806,
        ..IN_ETH
    };
    let cases: Vec<(&str, Vec<u8>, &Ctx, u32)> = vec![
        ("handshake", ipv4(6, 5, 0, &tcp(0, hs)), &IN_ETH, 40 + sp),
        (
            "handshake, TCP options",
            ipv4(6, 5, 0, &tcp(3, hs)),
            &IN_ETH,
            52 + sp,
        ),
        (
            "GET /, IP options",
            ipv4(6, 6, 0, &tcp(0, get)),
            &IN_ETH,
            44 + sp,
        ),
        ("GET / sent", ipv4(6, 5, 0, &tcp(0, get)), &out_eth, 40 + sp),
        (
            "GET / on lo, incoming copy",
            ipv4(6, 5, 0, &tcp(0, get)),
            &in_lo,
            40 + sp,
        ),
        (
            "GET / on lo, outgoing copy",
            ipv4(6, 5, 0, &tcp(0, get)),
            &out_lo,
            0,
        ),
        ("another host's", ipv4(6, 5, 0, &tcp(0, get)), &other, 0),
        (
            "first fragment (MF)",
            ipv4(6, 5, 0x2000, &tcp(0, hs)),
            &IN_ETH,
            40 + sp,
        ),
        (
            "later fragment",
            ipv4(6, 5, 0x2010, &tcp(0, hs)),
            &IN_ETH,
            0,
        ),
        (
            "proxy request",
            ipv4(6, 5, 0, &tcp(0, b"GET http://a/ HTTP/1.1")),
            &IN_ETH,
            0,
        ),
        (
            "TLS",
            ipv4(6, 5, 0, &tcp(0, b"\x16\x03\x01\x02\x00\x01")),
            &IN_ETH,
            0,
        ),
        ("SYN", ipv4(6, 5, 0, &tcp(2, b"")), &IN_ETH, 0),
        ("3 bytes", ipv4(6, 5, 0, &tcp(0, b"\x13Bi")), &IN_ETH, 0),
        (
            "DNS answer",
            ipv4(17, 5, 0, &udp(53, b"\x12\x34\x81\x80")),
            &IN_ETH,
            28 + SNAP_DNS,
        ),
        ("KRPC", ipv4(17, 5, 0, &udp(6881, krpc)), &IN_ETH, 28 + sp),
        (
            "tracker connect",
            ipv4(17, 5, 0, &udp(40000, &connect)),
            &IN_ETH,
            28 + sp,
        ),
        (
            "connect magic, 17 bytes",
            ipv4(17, 5, 0, &udp(40000, &[&connect[..], &[0]].concat())),
            &IN_ETH,
            28,
        ),
        (
            "uTP SYN",
            ipv4(17, 5, 0, &udp(6881, &utp(0x41))),
            &IN_ETH,
            28 + SNAP_UTP,
        ),
        (
            "uTP STATE",
            ipv4(17, 5, 0, &udp(6881, &utp(0x21))),
            &IN_ETH,
            28 + SNAP_UTP,
        ),
        (
            "uTP FIN",
            ipv4(17, 5, 0, &udp(6881, &utp(0x11))),
            &IN_ETH,
            28 + SNAP_UTP,
        ),
        (
            "uTP DATA: counted",
            ipv4(17, 5, 0, &udp(6881, &utp(0x01))),
            &IN_ETH,
            28,
        ),
        (
            "version 2",
            ipv4(17, 5, 0, &udp(6881, &utp(0x42))),
            &IN_ETH,
            28,
        ),
        (
            "type 5",
            ipv4(17, 5, 0, &udp(6881, &utp(0x51))),
            &IN_ETH,
            28,
        ),
        (
            "other UDP: counted",
            ipv4(17, 5, 0, &udp(443, b"\xc3quic")),
            &IN_ETH,
            28,
        ),
        ("empty UDP", ipv4(17, 5, 0, &udp(9999, b"")), &IN_ETH, 28),
        ("IPv6 handshake", ipv6(6, &tcp(0, hs)), &v6, 60 + sp),
        ("IPv6 KRPC", ipv6(17, &udp(6881, krpc)), &v6, 48 + sp),
        ("IPv6 other UDP", ipv6(17, &udp(5000, b"x")), &v6, 48),
        ("IPv6 hop-by-hop", ipv6(0, &tcp(0, hs)), &v6, 0),
        ("ICMP", ipv4(1, 5, 0, &[8, 0, 0, 0]), &IN_ETH, 0),
        ("ARP", vec![0, 1, 8, 0, 6, 4, 0, 1], &arp, 0),
    ];
    for (name, pkt, ctx, want) in cases {
        assert_eq!(run(&prog, &pkt, ctx), want, "{name}");
    }
}

/// The kernel's checks at SO_ATTACH_FILTER (`bpf_check_classic` and
/// `check_load_and_stores` in net/core/filter.c): jumps inside the
/// program, a return last, scratch slots read only where every path (as
/// its linear pass sees them) stored them.
fn kernel_accepts(prog: &[Insn]) -> Result<(), String> {
    let n = prog.len();
    if n == 0 || n > 4096 {
        return Err("length".into());
    }
    let mut masks = vec![u16::MAX; n];
    // Nothing is stored when the program starts.
    let mut valid = 0u16;
    for (pc, i) in prog.iter().enumerate() {
        valid &= masks[pc];
        let (class, mode) = (i.code & 0x07, i.code & 0xe0);
        if class == ST {
            valid |= 1 << i.k;
        } else if class == LD && mode == MEM {
            if valid & (1 << i.k) == 0 {
                return Err(format!(
                    "M[{}] read at {pc} before being stored on every path",
                    i.k
                ));
            }
        } else if class == JMP {
            let targets: Vec<usize> = if i.code & 0xf0 == JA {
                vec![pc + 1 + i.k as usize]
            } else {
                vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)]
            };
            for t in targets {
                if t >= n {
                    return Err(format!("jump out of the program at {pc}"));
                }
                masks[t] &= valid;
            }
            valid = u16::MAX;
        } else if class == LD
            && mode == ABS
            && i.k >= AD_OFF
            && ![AD_PROTOCOL, AD_PKTTYPE, AD_IFINDEX].contains(&i.k)
        {
            return Err(format!("unknown ancillary load at {pc}"));
        }
    }
    match prog[n - 1].code & 0x07 {
        RET => Ok(()),
        _ => Err("the last instruction is not a return".into()),
    }
}

#[test]
fn the_kernel_checks_pass() {
    let prog = program().expect("assembles");
    assert_eq!(kernel_accepts(&prog), Ok(()));
    // The check itself: a slot read on a path that did not store it.
    let mut a = Asm::default();
    a.op(LD | W | ABS, 0);
    a.jmp(JMP | JEQ | K, 1, Next, L("read"));
    a.op(ST, 2);
    a.label("read");
    a.op(LD | MEM, 2);
    a.op(RET | RET_A, 0);
    assert!(kernel_accepts(&a.finish().expect("assembles")).is_err());
}

#[test]
fn labels_resolve_forward_only() {
    let mut a = Asm::default();
    a.label("top");
    a.jmp(JMP | JEQ | K, 1, L("top"), Next);
    assert!(a.finish().is_err());
    let mut a = Asm::default();
    a.jmp(JMP | JEQ | K, 1, L("nowhere"), Next);
    assert!(a.finish().is_err());
}
