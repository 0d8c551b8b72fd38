//! The process executor against real processes: the step contract, exit
//! codes, outputs, masking, and stopping the whole process group.

mod docker;
mod process;
