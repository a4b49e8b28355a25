//! From verified claims to the job's identity, per issuer kind. (Being written.)
