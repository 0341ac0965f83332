//! Reading one audio file into mono samples at a chosen rate: WAV through `hound` (the
//! maintained WAV crate: every integer width and float), FLAC, Ogg Vorbis and MP3 through
//! `symphonia`, channels averaged, resampled with `rubato`'s FFT resampler (a synchronous
//! resampler suits whole clips at fixed rates; its anti-aliasing filter is what an 8 kHz
//! recording needs on its way to 16 kHz).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// A decoded clip: mono samples in [-1, 1] and the rate they were recorded at.
#[derive(Debug, Clone)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub rate: u32,
    /// Channels in the file (averaged into `samples`).
    pub channels: usize,
}

/// File extensions the readers take.
pub const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "flac", "ogg", "mp3", "oga"];

pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Read `path` into mono samples. Errors name the file and say what is wrong with it.
pub fn read_audio(path: &Path) -> Result<Audio> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let audio = if ext == "wav" {
        read_wav(path)
    } else {
        read_with_symphonia(path)
    }
    .with_context(|| format!("{}: unreadable audio", path.display()))?;
    if audio.rate == 0 {
        bail!("{}: the file says its sample rate is 0", path.display());
    }
    Ok(audio)
}

fn mono(interleaved: Vec<f32>, channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved;
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

fn read_wav(path: &Path) -> Result<Audio> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        bail!("the header gives 0 channels");
    }
    if spec.sample_rate == 0 {
        bail!("the header gives a sample rate of 0");
    }
    let expected = reader.len() as usize;
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(|e| anyhow!("truncated or corrupt sample data ({e})"))?;
    if samples.len() < expected {
        bail!(
            "truncated: the header promises {expected} samples, the file holds {}",
            samples.len()
        );
    }
    Ok(Audio {
        samples: mono(samples, channels),
        rate: spec.sample_rate,
        channels,
    })
}

fn read_with_symphonia(path: &Path) -> Result<Audio> {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let file = File::open(path)?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| anyhow!("not a format symphonia reads ({e})"))?;
    let track = format
        .default_track(TrackType::Audio)
        .context("no audio track")?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .context("the audio track has no codec parameters")?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| anyhow!("no decoder for this codec ({e})"))?;
    let track_id = track.id;
    let (mut samples, mut rate, mut channels) = (Vec::new(), 0u32, 0usize);
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A cut-off stream ends like this: keep what decoded, as players do.
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => bail!("corrupt stream ({e})"),
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let spec = buf.spec();
                let c = spec.channels().count().max(1);
                if channels != 0 && c != channels {
                    bail!("the channel count changes within the file ({channels} then {c})");
                }
                (rate, channels) = (spec.rate(), c);
                interleaved.resize(buf.samples_interleaved(), 0.0);
                buf.copy_to_slice_interleaved(&mut interleaved);
                samples.extend(mono(std::mem::take(&mut interleaved), c));
            }
            Err(Error::DecodeError(_)) => continue,
            Err(e) => bail!("cannot decode ({e})"),
        }
    }
    if samples.is_empty() {
        bail!("no audio decoded");
    }
    Ok(Audio {
        samples,
        rate,
        channels,
    })
}

/// `samples` at `from` Hz resampled to `to` Hz (the same samples when the rates agree).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler};
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    if from == 0 || to == 0 {
        bail!("cannot resample from {from} Hz to {to} Hz");
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| anyhow!("resampler from {from} Hz to {to} Hz: {e}"))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| anyhow!("resampler input: {e}"))?;
    let out = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| anyhow!("resampling from {from} Hz to {to} Hz: {e}"))?;
    Ok(out.take_data())
}

/// Write mono `samples` as a 16-bit WAV (clipped to [-1, 1]), atomically.
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    {
        let mut writer = hound::WavWriter::new(&mut bytes, spec)?;
        for &s in samples {
            writer.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)?;
        }
        writer.finalize()?;
    }
    crate::core::checkpoint::write_atomic(path, bytes.get_ref())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| (0.5 * (2.0 * std::f64::consts::PI * f * i as f64 / rate as f64).sin()) as f32)
            .collect()
    }

    #[test]
    fn wav_round_trip_and_resampling_keep_the_tone() {
        let dir = std::env::temp_dir().join(format!("pretext-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        let tone = sine(440.0, 8000, 0.5);
        write_wav(&path, &tone, 8000).unwrap();
        let back = read_audio(&path).unwrap();
        assert_eq!(
            (back.rate, back.channels, back.samples.len()),
            (8000, 1, 4000)
        );
        let err = back
            .samples
            .iter()
            .zip(&tone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "16-bit round trip off by {err}");
        // 8 kHz to 16 kHz: twice the samples, and the same 440 Hz sine in between.
        let up = resample(&back.samples, 8000, 16000).unwrap();
        assert!((up.len() as i64 - 8000).abs() <= 2, "{}", up.len());
        let reference = sine(440.0, 16000, 0.5);
        let mid = 2000..6000;
        let err = up[mid.clone()]
            .iter()
            .zip(&reference[mid])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.01, "resampled tone off by {err}");

        // A truncated file names itself and says so.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = format!("{:#}", read_audio(&cut).unwrap_err());
        assert!(e.contains("cut.wav") && e.contains("truncated"), "{e}");
        // A sample rate of 0 in the header.
        let mut zero = bytes.clone();
        zero[24..32].copy_from_slice(&[0; 8]); // the rate and the byte rate
        let z = dir.join("zero.wav");
        std::fs::write(&z, &zero).unwrap();
        let e = format!("{:#}", read_audio(&z).unwrap_err());
        assert!(e.contains("zero.wav") && e.contains("rate"), "{e}");
        // Not audio at all.
        let junk = dir.join("junk.ogg");
        std::fs::write(&junk, b"definitely not an ogg stream").unwrap();
        let e = format!("{:#}", read_audio(&junk).unwrap_err());
        assert!(e.contains("junk.ogg"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        assert_eq!(mono(vec![1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }
}
