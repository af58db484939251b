//! The eBPF capture against real TCP traffic between network namespaces:
//! every connection is reported once per side with exact endpoints,
//! initiator and byte counts (IPv4 and IPv6); refused and reset connections
//! say so; a connection that outlives the report interval is reported in
//! pieces that sum to its totals. Needs root (CI runs as root).

mod common;

use flowattr_host::netns::{Netns, link};

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use common::Recorder;
use flowattr_host::capture::CaptureSettings;
use flowattr_model::{Flow, FlowEnd, Initiator};

struct Pair {
    client: Netns,
    server: Netns,
}

fn pair(v4_net: u8) -> Pair {
    let client = Netns::new("cli").unwrap();
    let server = Netns::new("srv").unwrap();
    link(
        &client,
        &[
            &format!("10.{v4_net}.0.1/24"),
            &format!("fd00:{v4_net}::1/64"),
        ],
        &server,
        &[
            &format!("10.{v4_net}.0.2/24"),
            &format!("fd00:{v4_net}::2/64"),
        ],
    )
    .unwrap();
    Pair { client, server }
}

impl Pair {
    fn ids(&self) -> [u64; 2] {
        [self.client.inode(), self.server.inode()]
    }
}

/// Echo-style exchange: the client sends `up` bytes and half-closes, the
/// server reads them all and answers `down` bytes, both close.
fn exchange(pair: &Pair, server: SocketAddr, up: usize, down: usize) {
    let listener = pair
        .server
        .run(move || TcpListener::bind(server).unwrap())
        .unwrap();
    let served = pair
        .server
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), up);
            s.write_all(&vec![7u8; down]).unwrap();
        })
        .unwrap();
    pair.client
        .run(move || {
            let mut c = TcpStream::connect(server).unwrap();
            c.write_all(&vec![1u8; up]).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), down);
        })
        .unwrap();
    served.join().unwrap().unwrap();
}

fn final_flows(flows: &[Flow]) -> Vec<&Flow> {
    flows
        .iter()
        .filter(|f| f.end_state != FlowEnd::Ongoing)
        .collect()
}

fn check_exchanges(v4_net: u8, ipv6: bool) {
    let pair = pair(v4_net);
    let recorder = Recorder::start(CaptureSettings::default());
    let (client_ip, server_ip) = if ipv6 {
        (format!("[fd00:{v4_net}::1]"), format!("[fd00:{v4_net}::2]"))
    } else {
        (format!("10.{v4_net}.0.1"), format!("10.{v4_net}.0.2"))
    };
    let sizes = [(1usize, 1usize), (1000, 50_000), (250_000, 3)];
    for (i, (up, down)) in sizes.iter().enumerate() {
        let server: SocketAddr = format!("{server_ip}:{}", 8000 + i).parse().unwrap();
        exchange(&pair, server, *up, *down);
    }
    let flows = recorder.wait_for(&pair.ids(), |f| final_flows(f).len() >= 2 * sizes.len());
    let flows = final_flows(&flows);
    assert_eq!(flows.len(), 2 * sizes.len(), "{flows:#?}");
    for (i, (up, down)) in sizes.iter().enumerate() {
        let port = 8000 + i as u16;
        let server: SocketAddr = format!("{server_ip}:{port}").parse().unwrap();
        let client = flows
            .iter()
            .find(|f| f.remote == server)
            .unwrap_or_else(|| panic!("client side of {server}: {flows:#?}"));
        assert_eq!(
            client.local.ip().to_string(),
            client_ip.trim_matches(['[', ']'])
        );
        assert_eq!(client.initiator, Initiator::Local);
        assert_eq!(client.end_state, FlowEnd::Closed);
        assert_eq!(
            (client.bytes_sent, client.bytes_received),
            (*up as u64, *down as u64)
        );
        assert_eq!(client.netns_id, pair.client.inode());
        assert_eq!(client.pid, std::process::id());
        assert!(client.start_ns <= client.end_ns && client.packets_sent > 0);

        let served = flows
            .iter()
            .find(|f| f.local == server)
            .unwrap_or_else(|| panic!("server side of {server}: {flows:#?}"));
        assert_eq!(served.remote, client.local);
        assert_eq!(served.initiator, Initiator::Remote);
        assert_eq!(served.end_state, FlowEnd::Closed);
        assert_eq!(
            (served.bytes_sent, served.bytes_received),
            (*down as u64, *up as u64)
        );
        assert_eq!(served.netns_id, pair.server.inode());
        assert_eq!(served.pid, std::process::id(), "accepted socket's process");
    }
}

#[test]
fn ipv4_exchanges_are_reported_exactly_once_per_side() {
    check_exchanges(71, false);
}

#[test]
fn ipv6_exchanges_are_reported_exactly_once_per_side() {
    check_exchanges(72, true);
}

#[test]
fn refused_and_reset_connections_say_so() {
    let pair = pair(73);
    let recorder = Recorder::start(CaptureSettings::default());
    // Nothing listens on 9999: the server's kernel answers with a reset.
    let refused = pair
        .client
        .run(|| TcpStream::connect("10.73.0.2:9999").unwrap_err().kind())
        .unwrap();
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);

    // The client aborts an established connection (SO_LINGER 0 sends RST).
    let listener = pair
        .server
        .run(|| TcpListener::bind("10.73.0.2:9000").unwrap())
        .unwrap();
    let served = pair
        .server
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf); // 5 bytes
            let _ = s.read(&mut buf); // then the reset
        })
        .unwrap();
    pair.client
        .run(|| {
            let mut c = TcpStream::connect("10.73.0.2:9000").unwrap();
            c.write_all(b"hello").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt with a valid fd and a linger struct.
            let rc = unsafe {
                libc::setsockopt(
                    c.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as u32,
                )
            };
            assert_eq!(rc, 0);
        })
        .unwrap();
    served.join().unwrap().unwrap();

    let flows = recorder.wait_for(&pair.ids(), |f| f.len() >= 3);
    assert_eq!(flows.len(), 3, "{flows:#?}");
    let to = |port: u16| -> Vec<&Flow> {
        flows
            .iter()
            .filter(|f| f.remote.port() == port || f.local.port() == port)
            .collect()
    };
    let refused = to(9999);
    assert_eq!(
        refused.len(),
        1,
        "only the client side exists: {refused:#?}"
    );
    assert_eq!(refused[0].end_state, FlowEnd::Refused);
    assert_eq!(refused[0].initiator, Initiator::Local);
    assert_eq!(refused[0].bytes_sent, 0);

    let reset = to(9000);
    assert_eq!(reset.len(), 2, "{reset:#?}");
    for side in reset {
        assert_eq!(side.end_state, FlowEnd::Reset, "{side:#?}");
        let sent = if side.initiator == Initiator::Local {
            side.bytes_sent
        } else {
            side.bytes_received
        };
        assert_eq!(sent, 5, "{side:#?}");
    }
}

#[test]
fn long_connection_is_reported_in_intervals_that_sum_to_its_totals() {
    let pair = pair(74);
    let recorder = Recorder::start(CaptureSettings {
        report_interval: Duration::from_millis(300),
        ..CaptureSettings::default()
    });
    let listener = pair
        .server
        .run(|| TcpListener::bind("10.74.0.2:9000").unwrap())
        .unwrap();
    let served = pair
        .server
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got.len()
        })
        .unwrap();
    let chunks = [1000usize, 2000, 4000, 8000];
    pair.client
        .run(move || {
            let mut c = TcpStream::connect("10.74.0.2:9000").unwrap();
            for chunk in chunks {
                c.write_all(&vec![0u8; chunk]).unwrap();
                std::thread::sleep(Duration::from_millis(450));
            }
        })
        .unwrap();
    let total: usize = chunks.iter().sum();
    assert_eq!(served.join().unwrap().unwrap(), total);

    let flows = recorder.wait_for(&pair.ids(), |f| final_flows(f).len() >= 2);
    let client: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.initiator == Initiator::Local)
        .collect();
    let server: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.initiator == Initiator::Remote)
        .collect();
    for (side, records) in [("client", &client), ("server", &server)] {
        let ongoing = records
            .iter()
            .filter(|f| f.end_state == FlowEnd::Ongoing)
            .count();
        assert!(
            ongoing >= 2,
            "{side}: expected interval records: {records:#?}"
        );
        assert_eq!(
            records.len(),
            ongoing + 1,
            "{side}: one final record: {records:#?}"
        );
        let start = records[0].start_ns;
        assert!(
            records.iter().all(|f| f.start_ns == start),
            "{side}: same connection start: {records:#?}"
        );
    }
    let sent: u64 = client.iter().map(|f| f.bytes_sent).sum();
    let received: u64 = server.iter().map(|f| f.bytes_received).sum();
    assert_eq!((sent, received), (total as u64, total as u64));
}
