//! Time of the gradient all-reduce of each named VGG, as `vgg train` runs it (buckets of
//! 16 MiB, non-blocking): `mpirun -np 2 target/release/examples/allreduce`.
//! Prints seconds per all-reduce and the bus bandwidth 2 (n-1)/n * bytes / s of a ring.

use std::time::Instant;

use vgg::VggConfig;
use vgg::dist::mpi::MpiCollective;
use vgg::train::Collective;

fn main() {
    let comm = MpiCollective::init().expect("MPI starts");
    let n = comm.size() as f64;
    if comm.rank() == 0 {
        println!("{} ranks", comm.size());
        println!(
            "{:<10} {:>12} {:>10} {:>14}",
            "variant", "gradient MB", "seconds", "bus GB/s"
        );
    }
    for name in ["vgg11", "vgg16", "vgg19"] {
        let params = VggConfig::named(name)
            .expect("a named variant")
            .num_params();
        let mut buf = vec![1.0f32; params];
        comm.all_reduce_sum(&mut buf); // warm-up
        let runs = 3;
        let start = Instant::now();
        for _ in 0..runs {
            comm.all_reduce_sum(&mut buf);
        }
        let secs = start.elapsed().as_secs_f64() / runs as f64;
        let bytes = 4.0 * params as f64;
        if comm.rank() == 0 {
            println!(
                "{name:<10} {:>12.1} {secs:>10.3} {:>14.2}",
                bytes / 1e6,
                2.0 * (n - 1.0) / n * bytes / secs / 1e9
            );
        }
    }
}
