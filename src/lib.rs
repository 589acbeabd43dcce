pub use distlock_core;
